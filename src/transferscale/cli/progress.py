"""Rich progress bars for a running study: the whole study (jobs done / running / left, time left) and a bar
per running run (one under the local executor; several under a parallel one, whose workers report no steps)."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from transferscale.engine import runner


class RichProgress(runner.Progress):
    def __init__(self, console: Console):
        self.console = console
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=console, transient=False,
        )
        self.study = self.current = None
        self.bars_of: dict[str, object] = {}  # run key -> its bar, while it runs

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        self.bars.__exit__(*exc)

    def start(self, plan, todo, total_work):
        done = len(plan.runs) - len(todo)
        self.console.print(f"{len(plan.runs)} runs x {len(plan.tasks)} tasks planned; {done} already done, "
                           f"{len(todo)} to do")
        self.study = self.bars.add_task("study", total=max(total_work, 1), info="")

    def start_run(self, run, index, count):
        steps = run.config["training"]["steps"] if run.kind == "trained" else 1
        self.current = self.bars_of[run.key] = self.bars.add_task(f"{run.name}", total=steps, info="")

    def jobs(self, done, running, left):
        if self.study is not None:
            self.bars.update(self.study, info=f"{done} done, {running} running, {left} left")

    def train_step(self, step, steps, loss):
        if self.current is not None:
            self.bars.update(self.current, completed=step, total=steps, info=f"loss {loss:.3f}")

    def phase(self, text):
        if self.current is not None:
            self.bars.update(self.current, info=text)

    def note(self, text):
        self.bars.console.print(f"  [yellow]note[/] {text}", highlight=False)

    def advance(self, work):
        self.bars.advance(self.study, work)

    def end_run(self, run, status, seconds, note=""):
        bar = self.bars_of.pop(run.key, None)
        if bar is not None:
            self.bars.remove_task(bar)
            if bar == self.current:
                self.current = None
        colour = "green" if status == "done" else "red"
        self.bars.console.print(f"  [{colour}]{status}[/] {run.name} ({seconds:.0f} s) {note}", highlight=False)

    def finish(self):
        for bar in self.bars_of.values():
            self.bars.remove_task(bar)
        self.bars_of.clear()
        self.current = None
