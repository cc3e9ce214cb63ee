"""The commands of `autolfads` (run, train, sample, demo) and their shared plumbing: the top layer.

Each command validates everything (config, device, data) before any work, then calls the layers
below: `pbt/` (population), `train/` (one model), `outputs/` (posterior, checkpoint, files) and
`analysis/` (metrics, report). Nothing below imports from here.
"""
