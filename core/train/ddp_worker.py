"""One process of ``segstudio-cli train --nproc N``: torch.distributed.run starts this module
(``python -m core.train.ddp_worker``) N times; the command line comes in the environment
(:data:`core.train.distributed.ARGV_ENV`, JSON) so that torchrun's own option parser never
sees it (it rejects options such as ``--log`` as ambiguous abbreviations of its own)."""

from __future__ import annotations

import json
import os

from core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(json.loads(os.environ["SEGSTUDIO_DDP_ARGV"])))
