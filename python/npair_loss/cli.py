"""How the project's command-line tools answer a user error.

A mistake on the command line or in an input file (a missing file, a malformed line, an
unknown field, no such blob) ends in one line on standard error, `prog: error: ...`,
and exit status 2, the convention of argparse; never in a traceback. A tool parses its
options with this module's ArgumentParser (whose errors are UsageErrors, not argparse's
usage text), raises UsageError (or lets OSError escape from opening the user's file)
and runs its main through `run`:

    def main(argv=None):
        args = ArgumentParser(prog=PROG, ...).parse_args(argv)
        ...
        raise UsageError(f'{path}:{line}: expected "path label", got {text!r}')

    if __name__ == '__main__':
        sys.exit(run(main, PROG))

A bug still ends in a traceback: only the errors a user can fix become a line.
"""
import argparse
import json
import sys
import zipfile


class UsageError(Exception):
    """A mistake the user can fix: reported as `prog: error: <message>`, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown option, a bad value) are UsageErrors, so that
    `run` reports them in its one line; --help still prints and exits 0."""

    def error(self, message):
        raise UsageError(message)


def read_npz(path):
    """{name: array} from the user's .npz file; a UsageError if it is not one."""
    import numpy
    try:
        arrays = numpy.load(path)
        if not isinstance(arrays, numpy.lib.npyio.NpzFile):
            raise UsageError(f'{path}: one array, not an .npz file of them (write it with '
                             'numpy.savez(path, name=array, ...))')
        with arrays:
            return dict(arrays.items())
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UsageError(f'{path}: not an .npz file of arrays ({e})') from None


def read_json(path):
    """The value in the user's JSON file; a UsageError if it is not JSON."""
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise UsageError(f'{path}: not JSON ({e})') from None


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
