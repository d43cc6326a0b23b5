"""The run report: one self-contained HTML page per run (page.py lays it out, stage.py gathers the
run's rows from the lake and writes it next to the run's other outputs)."""
