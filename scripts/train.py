"""Train an hf_xmodal model, select it on validation, evaluate it on test, save it.

    accelerate launch scripts/train.py                       # DSCMR-style model, bundled Wikipedia
    accelerate launch scripts/train.py --model dscmr --epochs 40 --model_config '{"embed_dim": 256}'
    accelerate launch scripts/train.py args.json             # the same arguments as a JSON file
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py

Writes `<output_dir>/model` (model + processor, `from_pretrained`-ready; trained on the towers'
features, it carries the towers and takes images and texts), `results.json`,
`pr_curve.png`, and `checkpoints/` (the last training state; `--resume` continues from it).
The loop is `hf_xmodal.training.main`, so an installed package trains without this checkout.
"""

import logging
import sys

from hf_xmodal.training import main

if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    logging.getLogger("hf_xmodal").setLevel(logging.INFO)  # the run's summary
    main(sys.argv[1:])
