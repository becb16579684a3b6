"""Server side of ``benchmarks/vs_original_ebca.py``: runs the ORIGINAL EBCA code in its own environment.

Started by vs_original_ebca.py as ``<ref-python> _ebca_ref_worker.py <ref-code>``; it imports
``modules.models.energy_unet_2d_condition.EnergyUNet2DConditionModel`` from the checkout given
by path (the published code, diffusers 0.16.1; never copied into this repository) and answers
one JSON request per stdin line with one ``@@ {json}`` line on stdout:

* ``{"op": "load", "config": {...}, "weights": file, "inputs": file, "threads": n, "cak": {...}}``:
  build their UNet with ``config``, load ``weights`` (safetensors, ``strict=True``), read ``x``,
  ``t``, ``context`` from ``inputs``; ``cak`` = the ``cross_attention_kwargs`` their pipelines pass.
* ``{"op": "step", "save": file or null}``: one UNet call, timed inside this process
  (``perf_counter`` / ``process_time`` around the call only); ``save`` writes ``.sample`` there.
* ``{"op": "quit"}``.

Only this file's own code is here; nothing of the published code is.
"""
import json
import platform
import sys
import time
import traceback


def reply(**kw):
    sys.stdout.write("@@ " + json.dumps(kw) + "\n")
    sys.stdout.flush()


def main():
    sys.path.insert(0, sys.argv[1])
    import diffusers
    import torch
    from safetensors.torch import load_file, save_file

    from modules.models.energy_unet_2d_condition import EnergyUNet2DConditionModel

    state = {}
    reply(ok=True, versions={"python": platform.python_version(), "torch": torch.__version__,
                             "diffusers": diffusers.__version__})
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["op"] == "load":
                torch.set_num_threads(int(req["threads"]))
                t0 = time.perf_counter()
                unet = EnergyUNet2DConditionModel(**req["config"]).eval()
                sd = {k: v.float() for k, v in load_file(req["weights"]).items()}
                unet.load_state_dict(sd, strict=True)
                del sd
                inp = load_file(req["inputs"])
                state.update(unet=unet, x=inp["x"], t=inp["t"], ctx=inp["context"], cak=dict(req["cak"]))
                reply(ok=True, params=sum(p.numel() for p in unet.parameters()), load_s=time.perf_counter() - t0,
                      threads=torch.get_num_threads())
            elif req["op"] == "step":
                s = state
                with torch.no_grad():
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = s["unet"](s["x"], s["t"], encoder_hidden_states=s["ctx"], cross_attention_kwargs=s["cak"])
                    dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if req.get("save"):
                    save_file({"sample": out.sample.contiguous()}, req["save"])
                reply(ok=True, wall_s=dt, cpu_s=dc)
            elif req["op"] == "quit":
                reply(ok=True)
                return
            else:
                reply(ok=False, error=f"unknown op {req['op']!r}")
        except Exception as e:  # reported to the driver, which stops with the message
            reply(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())


if __name__ == "__main__":
    main()
