"""The command line: ``lmmbayes fit | summary | get-prior | demo``.

Examples
--------
::

    lmmbayes fit "bounce_time ~ std_age + (1 | county)" data.csv \\
        --prior "normal(200, 1)" --class Intercept \\
        --prior "normal(0, 10)" --class sd --group county --seed 1 --out fit.lmmb
    lmmbayes summary fit.lmmb
    lmmbayes get-prior "bounce_time ~ std_age + (1 | county)" data.csv
    lmmbayes demo --report demo.html

Bad arguments print the usage and exit with status 2; errors in the model or
data print one line starting with ``error:`` and exit with status 1; Ctrl-C at
any moment (also while the sampler is still being imported) prints one line
and exits with status 130. None shows a traceback. Data warnings (dropped
rows, collinear columns) are printed as one ``warning:`` line each.
"""

from __future__ import annotations

import _thread
import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LmmbayesError

_PRIOR_FIELDS = ("class_", "coef", "group", "lb", "ub")


class _PriorStart(argparse.Action):
    """``--prior DIST`` opens a new prior; the options after it refine that prior."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        priors = list(getattr(namespace, "priors", None) or [])
        priors.append({"dist": values})
        namespace.priors = priors


class _PriorField(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        priors = list(getattr(namespace, "priors", None) or [])
        if not priors:
            parser.error(f"{option_string} must follow the --prior it refines")
        priors[-1] = {**priors[-1], self.dest: values}
        namespace.priors = priors


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmmbayes", description="Bayesian linear mixed models, brms style.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="fit a model to a CSV file and print its summary")
    fit.add_argument("formula", help='model formula, e.g. "y ~ x + (1 + x | g)"')
    fit.add_argument("data", type=Path, help="CSV file with a header row")
    fit.add_argument("--prior", dest="priors", action=_PriorStart, metavar="DIST",
                     help='a prior such as "normal(0, 10)"; --class/--coef/--group/--lb/--ub after it refine it')
    fit.add_argument("--class", dest="class_", action=_PriorField, metavar="CLASS",
                     help="Intercept, b, sd, cor or a distributional parameter such as sigma (default b)")
    fit.add_argument("--coef", dest="coef", action=_PriorField)
    fit.add_argument("--group", dest="group", action=_PriorField)
    fit.add_argument("--lb", dest="lb", action=_PriorField, type=float)
    fit.add_argument("--ub", dest="ub", action=_PriorField, type=float)
    fit.add_argument("--family", default="gaussian", help="response family (gaussian, poisson, bernoulli, ...)")
    fit.add_argument("--link", default=None, help="link function (the family's default if omitted)")
    fit.add_argument("--method", default="auto", help="engine: auto, collapsed or joint")
    fit.add_argument("--chains", type=int, default=4)
    fit.add_argument("--draws", type=int, default=1000)
    fit.add_argument("--tune", type=int, default=1000)
    fit.add_argument("--seed", type=int, default=None)
    fit.add_argument("--target-accept", dest="target_accept", type=float, default=None,
                     help="NUTS target acceptance (default: 0.8 joint engine, 0.95 collapsed)")
    fit.add_argument("--out", type=Path, help="save the fit to this file (read it with `lmmbayes summary`)")
    fit.add_argument("--report", type=Path, help="write a self-contained HTML report")
    fit.add_argument("--quiet", action="store_true", help="no progress display")

    summary = sub.add_parser("summary", help="print the summary of a saved fit")
    summary.add_argument("path", type=Path)

    get_prior = sub.add_parser("get-prior", help="list the priors a model can take, with brms's defaults")
    get_prior.add_argument("formula")
    get_prior.add_argument("data", type=Path)
    get_prior.add_argument("--family", default="gaussian")
    get_prior.add_argument("--link", default=None)

    demo = sub.add_parser("demo", help="the tutorial workflow on the embedded bounce data")
    demo.add_argument("--report", type=Path, help="write the workflow's HTML report here")
    demo.add_argument("--chains", type=int, default=4)
    demo.add_argument("--draws", type=int, default=1000)
    demo.add_argument("--tune", type=int, default=1000)
    demo.add_argument("--seed", type=int, default=2020)
    demo.add_argument("--quiet", action="store_true")
    return parser


def _read_csv(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise LmmbayesError(f"data file {str(path)!r} does not exist")
    try:
        return pd.read_csv(path)
    except Exception as exc:  # pandas' parser errors vary by version
        raise LmmbayesError(f"could not read {str(path)!r} as CSV: {exc}") from None


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _family(args: argparse.Namespace) -> Any:
    from ..families import family

    return family(args.family, args.link)


def _cmd_fit(args: argparse.Namespace) -> None:
    from ..api import fit
    from ..errors import ConvergenceWarning
    from ..priors import prior

    data = _read_csv(args.data)
    priors = [prior(**{k: v for k, v in spec.items() if k == "dist" or k in _PRIOR_FIELDS})
              for spec in (args.priors or [])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # convergence advice is printed in the summary
        result = fit(args.formula, data, priors, family=_family(args), chains=args.chains, draws=args.draws,
                     tune=args.tune, seed=args.seed, target_accept=args.target_accept, progress=_progress(args),
                     method=args.method)
    print(result.summary())
    if args.out:
        result.save(args.out)
        print(f"\nSaved the fit to {args.out}")
    if args.report:
        from ..workflow.report import report

        report([result], args.report, data=data)
        print(f"Wrote the report to {args.report}")


def _cmd_summary(args: argparse.Namespace) -> None:
    from ..api import load

    print(load(args.path).summary())


def _cmd_get_prior(args: argparse.Namespace) -> None:
    from ..api import get_prior

    print(repr(get_prior(args.formula, _read_csv(args.data), family=_family(args))))


def _cmd_demo(args: argparse.Namespace) -> None:
    from . import demo

    fits = demo.run(args.chains, args.draws, args.tune, args.seed, progress=_progress(args))
    if args.report:
        from .. import datasets
        from ..workflow.report import report

        report(list(fits.values()), args.report, data=datasets.load_bounce_times())
        print(f"Wrote the report to {args.report}")


COMMANDS = {"fit": _cmd_fit, "summary": _cmd_summary, "get-prior": _cmd_get_prior, "demo": _cmd_demo}


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever the message


@contextmanager
def _interrupts_never_lost() -> Iterator[None]:
    """Make one Ctrl-C stop the command even where Python would swallow it.

    CPython cannot raise an exception out of a weakref callback or a
    ``__del__``: it reports it through `sys.unraisablehook` ("Exception
    ignored in ...") and goes on, so a Ctrl-C that lands while the import
    system drops a module lock was lost and the fit ran to its end. While the
    command runs, such a KeyboardInterrupt is raised again in the main thread,
    where the command handles it: from a thread, a moment later, because an
    interrupt raised inside the hook would be swallowed again.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            again = threading.Timer(0.05, _thread.interrupt_main, (signal.SIGINT,))
            again.daemon = True
            again.start()
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    with _interrupts_never_lost():
        try:
            args = _parser().parse_args(argv)
            previous = warnings.showwarning
            warnings.showwarning = _one_line_warning
            try:
                COMMANDS[args.command](args)
            finally:
                warnings.showwarning = previous
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except LmmbayesError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


def entry() -> None:
    """The process entry point (console script and ``python -m lmmbayes``): `main`, then exit with its status.

    After a Ctrl-C, a library may still be unwinding (a compiler probe, a
    worker thread): a second Ctrl-C or a late re-raise must not turn the clean
    exit into a traceback or a death by signal, so SIGINT is ignored from
    then on. Only here, in a process that is about to end: ``main`` itself
    leaves signal handling as it found it.
    """
    status = main()
    if status == 130:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # CPython marks a Ctrl-C that arrives while exec'd source runs (dataclasses and other libraries
        # exec strings while being imported) as unhandled even when `main` caught it, and at exit kills
        # itself with SIGINT (status -2 instead of 130). Leave now, with the status the shell expects.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == "__main__":
    entry()
