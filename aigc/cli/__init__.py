"""The ``aigc`` command. Errors become one line on stderr and an exit code:

    0  done
    1  the backend failed (after retries), or the output was invalid
    2  bad input, template, configuration or usage; an output that cannot be written; the server rejected
       the API key (401), access (403) or the model (404)
    3  budget reached: nothing more was sent
    130 interrupted (143: terminated)

``AIGC_DEBUG=1`` shows the traceback instead. (``aigc batch`` documents its own codes.)
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from ..errors import (
    AigcError,
    AuthenticationFailed,
    BudgetExceeded,
    ConfigError,
    InputError,
    ModelNotFound,
    OutputError,
    PermissionDenied,
    TemplateError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def exit_code(error: BaseException) -> int:
    if isinstance(error, BudgetExceeded):
        return EXIT_BUDGET
    # What the user must fix before trying again: the input, the setup, the key, the model name.
    if isinstance(error, (ConfigError, InputError, OutputError, TemplateError, AuthenticationFailed,
                          PermissionDenied, ModelNotFound)):
        return EXIT_USAGE
    return EXIT_FAILED  # the backend failed after its retries, or the output never validated


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"aigc: {record.getMessage()}"


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    root = logging.getLogger("aigc")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if os.environ.get("AIGC_DEBUG") else logging.WARNING)
    # Long one-time steps (model conversion) are worth telling a person about.
    logging.getLogger("aigc.local").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``aigc`` console script."""
    from . import admin, batch, chat, content, eval, serve, tune  # noqa: F401  (register their commands)
    from .app import app
    from .lazy import for_argv

    content.register_task_commands()

    _setup_logging()
    debug = bool(os.environ.get("AIGC_DEBUG"))
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        code = for_argv(app, args)(args=args, prog_name="aigc", standalone_mode=False)
    except typer.Exit as e:
        code = e.exit_code
    except typer.TyperException as e:  # usage errors: typer prints them with a hint
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            print(f"aigc: error: {e.format_message()}", file=sys.stderr)
        code = EXIT_USAGE if e.exit_code == 2 else e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("aigc: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except AigcError as e:
        if debug:
            raise
        print(f"aigc: error: {e}", file=sys.stderr)
        code = exit_code(e)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing more to say
        code = EXIT_OK
    except Exception as e:  # a bug: still one line, unless debugging
        if debug:
            raise
        print(f"aigc: internal error: {type(e).__name__}: {e} (run with AIGC_DEBUG=1 for details)",
              file=sys.stderr)
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)
