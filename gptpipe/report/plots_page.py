"""An offline page template for `dvc plots show` and `dvc plots diff`.

Why: DVC's default page (dvc_render's `PAGE_HTML`, filled with the Vega renderer's `SCRIPTS`)
loads Vega, Vega-Lite and vega-embed from cdn.jsdelivr.net, so on a machine without internet
`dvc_plots/index.html` stays blank. DVC lets a repository name its own page template (the
config key `plots.html_template`, a file holding `{plot_divs}`); this module writes one that is
DVC's default page with the three libraries inline instead of the CDN `<script src>` tags. The
JavaScript comes from vl-convert-python (the Altair team's package, a pinned dependency):
`vl_convert.javascript_bundle()` bundles vega-embed, Vega-Lite and Vega and sets `vegaEmbed`,
`vegaLite` and `vega` on `window`, which is what DVC's plot divs call.

Nothing machine-specific is committed: the template (about 1 MB, generated from the installed
package) goes to `.dvc/tmp/offline-plots.html`, and the key, a path relative to `.dvc/` as DVC
resolves it, goes to `.dvc/config.local`; DVC's own `.dvc/.gitignore` ignores both. A committed
`.dvc/config` naming a generated file would break `dvc plots show` in any clone not yet set up
(DVC then takes the missing path for the template text itself and refuses it). `make setup`
runs this module; `python -m gptpipe.report.plots_page [--repo DIR]` (re)installs it by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from gptpipe.errors import BadInput, one_line, os_message
from gptpipe.fsutil import write_text

# Where the template goes, relative to the repository's `.dvc/` folder (DVC resolves a relative
# `plots.html_template` against that folder). `.dvc/tmp/` is git-ignored by DVC itself.
TEMPLATE = "tmp/offline-plots.html"
CONFIG_KEY = "plots.html_template"

# DVC's default page (dvc_render.html.PAGE_HTML) with `{scripts}`, the CDN tags, replaced by the
# bundle inline. dvc_render fills `{refresh_tag}` and `{plot_divs}` with str.replace, so the
# braces of the JavaScript need no escaping. The bundle runs inside a function so that its
# top-level names (minified: `n`, `t`, ...) stay its own and cannot clash with the `var spec`
# of DVC's plot divs; it sets `window.vegaEmbed` (and `vega`, `vegaLite`) itself.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <title>DVC Plot</title>
    <!-- {provenance} -->
    <script type="text/javascript">
(function () {{
{bundle}
}})();
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>"""

# What the bundle runs once loaded: the names DVC's plot divs call (`vegaEmbed`), and the two
# libraries beside it, made global (vl-convert's default snippet, spelled out).
_SNIPPET = """
window.vegaEmbed = vegaEmbed;
window.vegaLite = vegaLite;
window.vega = vega;
"""

# The placeholders dvc_render replaces; the bundle must hold none of them.
_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def _vega_lite_version(available: Sequence[str]) -> str | None:
    """The newest bundled Vega-Lite of the major version DVC's plot specs declare (their
    `$schema`), so vega-embed compiles them with the Vega-Lite they were written for; None
    (vl-convert's latest) when none matches."""
    from dvc_render.vega_templates import LinearTemplate  # type: ignore[import-untyped]

    schema = str(LinearTemplate.DEFAULT_CONTENT.get("$schema", ""))
    found = re.search(r"/v(\d+)(?:\.\d+)*\.json$", schema)
    if found is None:
        return None
    same_major = [v for v in available if v.split(".")[0] == found.group(1)]
    if not same_major:
        return None
    return max(same_major, key=lambda v: tuple(int(part) for part in v.split(".")))


def page_html() -> str:
    """The template's text: DVC's default page with Vega, Vega-Lite and vega-embed inline."""
    import vl_convert

    vl_version = _vega_lite_version(vl_convert.get_vegalite_versions())
    bundle = vl_convert.javascript_bundle(_SNIPPET, vl_version=vl_version)
    # Inside <script>, only "</script" (any case) ends the element early; "<\/" is the same
    # text to JavaScript in every place it can occur (a string, a regex, a template literal).
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    held = [p for p in _PLACEHOLDERS if p in bundle]
    if held:
        raise RuntimeError(f"vl-convert's bundle holds dvc_render placeholders {held}")
    provenance = (
        f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vl_version or 'latest'}, "
        f"vega-embed {vl_convert.get_vega_embed_version()}, inlined from vl-convert-python "
        f"{version('vl-convert-python')} by gptpipe.report.plots_page"
    )
    return PAGE.format(provenance=provenance, bundle=bundle)


def _dvc_dir(repo: Path) -> Path:
    dvc_dir = repo / ".dvc"
    if not dvc_dir.is_dir():
        raise BadInput(f"{repo}: not a DVC repository (no .dvc folder; run `dvc init` there)")
    return dvc_dir


def _set_config(dvc_dir: Path, value: str) -> None:
    """`dvc config --local plots.html_template VALUE`, through DVC's own config code."""
    from dvc.config import Config
    from dvc.exceptions import DvcException

    local = dvc_dir / Config.CONFIG_LOCAL
    try:
        config = Config(dvc_dir=str(dvc_dir), validate=False)
        with config.edit("local") as conf:
            section, key = CONFIG_KEY.split(".")
            conf.setdefault(section, {})[key] = value
    except OSError as exc:
        raise BadInput(os_message(exc, local)) from None
    except DvcException as exc:  # a malformed config file DVC cannot read or validate
        raise BadInput(f"{local}: {exc}") from None


def install(repo: Path | str = ".") -> Path:
    """Write the offline template into `repo`'s `.dvc/` and point `plots.html_template` at it
    in `.dvc/config.local`. Returns the template's path. Bad input: `repo` is no DVC
    repository, or a file there cannot be written."""
    repo = Path(repo)
    dvc_dir = _dvc_dir(repo)
    target = dvc_dir / TEMPLATE
    write_text(target, page_html())
    try:
        _set_config(dvc_dir, TEMPLATE)
    except BaseException:
        target.unlink(missing_ok=True)  # all or nothing: `make setup` tries again next time
        raise
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gptpipe.report.plots_page [--repo DIR]`: install. Exit status 2 and one line
    on bad input, 130 after Ctrl-C, as every gptpipe command."""
    parser = argparse.ArgumentParser(
        prog="python -m gptpipe.report.plots_page",
        description=(
            "Install an offline page template for `dvc plots show` (Vega, Vega-Lite and "
            "vega-embed inline, no CDN) into DIR/.dvc/ and set plots.html_template in "
            "DIR/.dvc/config.local."
        ),
    )
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (.)")
    args = parser.parse_args(argv)
    try:
        target = install(args.repo)
    except KeyboardInterrupt:
        print("gptpipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        print(f"gptpipe: error: {message}", file=sys.stderr)
        return 2
    print(f"dvc plots page template: {target} (plots.html_template in .dvc/config.local)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
