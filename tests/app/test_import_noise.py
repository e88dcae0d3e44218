"""The command line keeps what third-party packages log while they are imported off stderr, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import textwrap

NOISY_MODULE = textwrap.dedent(
    """
    import logging
    import warnings

    logging.getLogger("noisy.backend").warning("import-time log record")
    warnings.warn("import-time warning", UserWarning)
    logging.getLogger("noisy.backend").error("import-time error")


    def run():
        logging.getLogger("noisy.backend").warning("runtime log record")
        warnings.warn("runtime warning", UserWarning)
    """
)


def run_with(tmp_path, program: str) -> subprocess.CompletedProcess:
    (tmp_path / "noisy.py").write_text(NOISY_MODULE, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_import_time_warnings_of_other_packages_are_dropped_and_later_ones_kept(tmp_path):
    result = run_with(
        tmp_path,
        """
        from layerwise_trainer.app.import_noise import drop_import_noise

        drop_import_noise()
        import noisy

        noisy.run()
        """,
    )
    lines = result.stderr.splitlines()
    assert "import-time log record" not in result.stderr
    assert "import-time warning" not in result.stderr
    assert lines[0] == "import-time error"
    assert lines[1] == "runtime log record"
    assert "UserWarning: runtime warning" in lines[2]
    assert len(lines) == 4  # the warning's source line follows it


def test_without_it_the_same_imports_print_their_noise(tmp_path):
    result = run_with(tmp_path, "import noisy")
    assert "import-time log record" in result.stderr
    assert "import-time warning" in result.stderr


def test_the_package_s_own_records_are_kept_during_imports(tmp_path):
    (tmp_path / "ours.py").write_text(
        "import logging\nlogging.getLogger('layerwise_trainer.probe').warning('ours, at import')\n", encoding="utf-8"
    )
    result = run_with(
        tmp_path,
        """
        from layerwise_trainer.app.import_noise import drop_import_noise

        drop_import_noise()
        import ours
        """,
    )
    assert result.stderr == "ours, at import\n"
