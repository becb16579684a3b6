"""Notebook 06_inpainting."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
    md(r'''
# 06 · Text-guided inpainting

Only the masked region should listen to the prompt, so only its queries feed the context update:

$$\Delta K = \gamma_\text{attn}\, \operatorname{softmax}_i(S)^\top (m \odot Q) - \gamma_\text{norm}\, \operatorname{softmax}_j(|k_j|^2)\, k_j ,$$

with $m$ the mask resized to each layer's grid (bilinear, `align_corners=True`); the attention output
itself is untouched. With an inpainting model (9-channel UNet) the pipeline keeps the rest; on a
plain model the **RePaint** variant re-noises the known region from the source at every step
(the published RePaint path fed the inverted mask to the update; here the right one is used,
`update_region="known"` reproduces theirs).
'''),
    code(SETUP),
    code('''
import numpy as np
from PIL import Image
from ebca_viz.tasks import inpaint, sample_image

if REAL:
    inpaint_pipe, _ = viz.load_model("sd15-inpainting")
    photo, _ = sample_image()
    PROMPT = "teddy bear"
elif MODEL == "tiny":
    inpaint_pipe, _ = viz.load_model("tiny-inpainting")   # a random 9-channel inpainting UNet
    photo = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8"))
    PROMPT = "a red circle"
else:  # shapes-world: RePaint on the text-to-image model
    inpaint_pipe = pipe
    from ebca_viz.shapes import world
    photo = Image.fromarray(world.make_scene(np.random.default_rng(5), pairs=[("green", "square")]).image)
    PROMPT = "a red circle"
W_, H_ = photo.size
mask = np.zeros((H_, W_), np.uint8); mask[H_ // 4: 3 * H_ // 4, W_ // 4: 3 * W_ // 4] = 255
mask = Image.fromarray(mask)
runs = {}
for name, g in {"no update (gamma 0)": 0.0, "masked EBCU (gamma 0.025)": 0.025}.items():
    with ev.trace(inpaint_pipe) as tr:
        res = inpaint(inpaint_pipe, photo, mask, PROMPT, gamma_attn=g, gamma_norm=g, seed=0, num_inference_steps=STEPS)
    runs[name] = (res, tr)
first = next(iter(runs.values()))[0]
viz.compare_images({"source": first.extras["source"], "mask": first.extras["mask"],
                    **{k: r.image for k, (r, _) in runs.items()}})
'''),
    md(r'''## The mask as each layer sees it'''),
    code('''
import torch.nn.functional as F
m = first.extras["latent_mask"].float()
grids = sorted({tuple(g) for g in runs["masked EBCU (gamma 0.025)"][1].grids.values()}, reverse=True)
layer_masks = [F.interpolate(m, size=g, mode="bilinear", align_corners=True)[0] for g in grids]
viz.plot_attention_maps(layer_masks, tokens=["mask"], row_labels=[f"{g[0]}x{g[1]}" for g in grids], cmap="gray", normalize="none")
'''),
    md(r'''## Attention of the prompt's words, with the masked update'''),
    code('''
res, tr = runs["masked EBCU (gamma 0.025)"]
viz.plot_trace_maps(tr, by="mean", image=res.image)
'''),
    code('''viz.plot_trace_energies(tr, reference=runs["no update (gamma 0)"][1])'''),
]
