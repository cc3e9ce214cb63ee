"""`autolfads report OUT`: plots of a finished or running fit, as PNGs and one self-contained HTML page.

OUT/report/ receives one PNG per figure and `index.html`, which embeds every PNG as a base64 data
URI so that the one file can be mailed. Each file is written under a temporary name and renamed.

The report draws what exists. A running AutoLFADS fit has `fitlog.csv` (one row per worker per
epoch) and, once a generation has finished, `pbt_history.csv`; a finished one also has
`lfads_output_sess{i}.h5` (inputs, inferred rates, factors, generator states, inferred inputs) and
`config.yaml`. The page says what is missing.

Modules: `run_files` (reading the run folder), `canvas` (panel grids, colours, PNG rendering),
`training_figures` (cost and validation curves), `hp_progression` (HP values per worker and
exploit events, and their figure), `rates_figure` (data next to inferred rates), `latent_figures`
(factor and generator-state PCs, inferred inputs), `log_sections` (overview, training and
hyperparameter sections), `session_sections` (one section per session output file),
`metrics_table` (the metrics of `evaluate`), `page` (sections and the HTML) and `commands`
(`make_report`, the CLI command, the report at the end of a run).

Shape legend: B trials, T bins, N channels, F factors, H generator units, U inferred inputs.
"""

from autolfads.analysis.report.commands import REPORT_DIR as REPORT_DIR
from autolfads.analysis.report.commands import make_report as make_report
from autolfads.analysis.report.commands import report_at_end as report_at_end
from autolfads.analysis.report.commands import report_command as report_command
from autolfads.analysis.report.run_files import RunFiles as RunFiles
from autolfads.analysis.report.run_files import read_run as read_run

__all__ = ["RunFiles", "read_run", "make_report", "report_command", "report_at_end", "REPORT_DIR"]
