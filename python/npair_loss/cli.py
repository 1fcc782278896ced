"""How the project's command-line tools answer a user error.

A mistake on the command line or in an input file (a missing file, a malformed line, an
unknown field, no such blob) ends in one line on standard error, `prog: error: ...`,
and exit status 2, the convention of argparse; never in a traceback. A tool raises
UsageError (or lets OSError escape from opening the user's file) and runs its main
through `run`:

    def main(argv=None):
        args = parser.parse_args(argv)
        ...
        raise UsageError(f'{path}:{line}: expected "path label", got {text!r}')

    if __name__ == '__main__':
        sys.exit(run(main, 'python -m npair_examples.batches'))

A bug still ends in a traceback: only the errors a user can fix become a line.
"""
import sys


class UsageError(Exception):
    """A mistake the user can fix: reported as `prog: error: <message>`, exit status 2."""


def error_line(prog, error):
    """The one line that reports `error` (a UsageError or an OSError) for `prog`."""
    if isinstance(error, OSError) and error.filename is not None:
        return f'{prog}: error: {error.filename}: {error.strerror}'
    return f'{prog}: error: {error}'


def run(main, prog, argv=None):
    """main(argv)'s exit status; a UsageError or OSError becomes one line and 2."""
    try:
        return main(argv)
    except (UsageError, OSError) as e:
        print(error_line(prog, e), file=sys.stderr)
        return 2
