"""The real CLIP tokenizer (49,408 tokens, built from the MIT-licensed merge list in tests/data/clip_bpe)
wherever tokenization matters: ids, SD 2's pad token, words -> positions, up-weighting, long prompts."""
import pytest
import torch

import ebca_viz as ev
from ebca_viz.config import token_positions
from ebca_viz.models.clip_bpe import N_MERGES, VOCAB_SIZE, write_clip_vocab

EOT, BANG = "<|endoftext|>", "!"


class _Pipe:  # what token_positions reads of a pipeline: its tokenizer(s)
    def __init__(self, tokenizer, tokenizer_2=None):
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2


def test_clip_ids_vocabulary_and_pad_tokens(clip_tokenizers, tmp_path):
    tok, tok2 = clip_tokenizers[EOT], clip_tokenizers[BANG]
    assert tok("A cat wearing a shirt").input_ids == [49406, 320, 2368, 3309, 320, 2523, 49407]
    assert tok2("A cat wearing a shirt").input_ids == [49406, 320, 2368, 3309, 320, 2523, 49407]
    assert len(tok) == VOCAB_SIZE == 49408 and N_MERGES == 48894
    assert tok.convert_ids_to_tokens([49406, 49407, 0, 256]) == ["<|startoftext|>", EOT, "!", "!</w>"]
    # SD 1.x pads with end-of-text, SD 2.x (OpenCLIP) and SDXL's second tokenizer with "!" = id 0
    assert tok("a cat", padding="max_length").input_ids[-3:] == [49407] * 3
    assert tok2("a cat", padding="max_length").input_ids[:5] == [49406, 320, 2368, 49407, 0]
    assert len(tok2("a cat", padding="max_length").input_ids) == 77 and tok2.pad_token_id == 0
    assert tok.tokenize("photorealistic") == ["photo", "realistic</w>"]
    with pytest.raises(FileNotFoundError, match="bpe_gz"):
        write_clip_vocab(tmp_path / "none.gz", tmp_path)


def test_words_to_positions_and_clear_errors(clip_tokenizers):
    p = _Pipe(clip_tokenizers[EOT])
    assert token_positions(p, "A cat wearing a shirt", ["shirt", "cat", 4]) == [5, 2, 4]
    assert token_positions(p, "A cat wearing a Shirt,", "shirt") == [5]  # lower-cased, punctuation is its own token
    with pytest.raises(ev.errors.EbcaVizError, match=r"'photorealistic' splits into 2 tokens \['photo', 'realistic</w>'\] "
                                                     r"at positions \[2, 3\]"):
        token_positions(p, "A photorealistic cat", ["photorealistic"])
    with pytest.raises(ValueError, match=r"'dog' is not a word of the prompt .*2 cat</w>"):
        token_positions(p, "A cat wearing a shirt", ["dog"])
    with pytest.raises(ValueError, match=r"'a' appears 2 times in the prompt, at positions \[1, 4\]"):
        token_positions(p, "A cat wearing a shirt", "a")
    long = " ".join(["cat"] * 80) + " dog"  # 82 tokens: CLIP keeps 77
    with pytest.raises(ValueError, match=r"'dog' is token 81 of the prompt, past the tokenizer's 77-token limit"):
        token_positions(p, long, "dog")
    # SDXL: both tokenizers (pad '<|endoftext|>' and '!') place a word at the same position
    assert token_positions(_Pipe(clip_tokenizers[EOT], clip_tokenizers[BANG]), "A cat wearing a shirt", "shirt") == [5]


def test_upweight_by_word_on_a_pipeline(layout_pipes):
    pipe = layout_pipes("sdxl-base")  # two tokenizers
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(ValueError, match=r"token_indices gives words \['shirt'\]: also give prompt="):
        ev.apply_energy_attention(pipe, ev.EBCAConfig(token_indices=["shirt"], token_upweight=[2.5]))
    with pytest.raises(ValueError, match="'dog' is not a word of the prompt"):
        ev.apply_energy_attention(pipe, ev.EBCAConfig(token_indices="dog", token_upweight=2.0, prompt="a cat"))
    assert dict(pipe.unet.attn_processors) == before  # refused before anything was installed
    with ev.energy_attention(pipe, ev.EBCAConfig(gamma_attn=0.01, token_indices=["shirt", 2], token_upweight=[2.5, 1.5],
                                                 prompt="A cat wearing a shirt")) as ctl:
        assert ctl.rc.token_indices == [5, 2] and ctl.rc.token_upweight == [2.5, 1.5]
    with pytest.raises(ValueError, match="bare UNet has no tokenizer"):
        ev.apply_energy_attention(pipe.unet, ev.EBCAConfig(token_indices=["shirt"], token_upweight=[2.5], prompt="a shirt"))
    assert dict(pipe.unet.attn_processors) == before


@pytest.mark.parametrize("name", ["sd15", "sd21-base", "sdxl-base"])
def test_long_prompt_is_truncated_to_77_tokens_and_the_trace_labels_it(name, layout_pipes):
    pipe = layout_pipes(name)
    long = "a photo of " + " ".join(["a red cat"] * 30) + " and a blue dog"
    assert len(pipe.tokenizer.tokenize(long)) > 77
    with ev.trace(pipe, quantities=["maps"]) as tr:
        pipe(long, num_inference_steps=1, height=64, width=64, output_type="latent", guidance_scale=1.0,
             generator=torch.Generator().manual_seed(0))
    assert len(tr.tokens) == 77 and tr.tokens[0] == "<|startoftext|>" and tr.tokens[-1] == EOT
    assert tr.tokens[1:4] == ["a", "photo", "of"] and "dog" not in tr.tokens
    pad = pipe.tokenizer.pad_token
    short = ev.trace(pipe, quantities=["maps"])
    with short:
        pipe("a cat", num_inference_steps=1, height=64, width=64, output_type="latent", guidance_scale=1.0)
    assert short.tokens[:4] == ["<|startoftext|>", "a", "cat", EOT] and short.tokens[4] == (pad if pad == BANG else EOT)
