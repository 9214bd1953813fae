"""The leakage guard: a test item must share neither a subject nor a content hash with training.

A subject in both splits lets the probe recognise the person instead of the label; the same file
(or a byte-identical copy under another name) in both is the same image tested twice. Either
makes the test score optimistic, so the probe refuses to run unless the user says otherwise
(``--allow-leakage``), and the report then says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from mocomri.errors import LeakageError


class _Row(Protocol):
    path: str
    subject: str
    sha1: str


def find_leakage(train_rows: Iterable[_Row], test_rows: Iterable[_Row]) -> list[str]:
    """One sentence per test item that shares a subject or a sha1 with a training item.

    Empty subjects and hashes are not compared (they carry no identity).
    """
    by_subject: dict[str, str] = {}
    by_sha1: dict[str, str] = {}
    for row in train_rows:
        if row.subject:
            by_subject.setdefault(row.subject, row.path)
        if row.sha1:
            by_sha1.setdefault(row.sha1, row.path)
    findings = []
    for row in test_rows:
        if row.subject and row.subject in by_subject:
            findings.append(
                f"test item '{row.path}' shares subject '{row.subject}' "
                f"with training item '{by_subject[row.subject]}'"
            )
        if row.sha1 and row.sha1 in by_sha1:
            findings.append(
                f"test item '{row.path}' has the same content (sha1 {row.sha1[:12]}) "
                f"as training item '{by_sha1[row.sha1]}'"
            )
    return findings


def pretraining_findings(
    pretrain_manifest: str | Path | None,
    pretrain_splits: Sequence[str],
    manifest: str | Path,
    eval_split: str,
) -> list[str]:
    """A finding when the encoder was pretrained on the evaluated split of the same manifest.

    Pretraining uses no labels, but it has still seen the test images; a probe on them measures
    something more transductive than intended.
    """
    if not pretrain_manifest or eval_split not in pretrain_splits:
        return []
    if Path(pretrain_manifest).resolve() != Path(manifest).resolve():
        return []
    return [f"the encoder was pretrained on split '{eval_split}' of {manifest}, the split being tested"]


def check_leakage(findings: list[str], *, allow: bool = False) -> list[str]:
    """Raises on any finding unless ``allow``; returns the findings for the report.

    Raises:
        LeakageError: there is a finding and ``allow`` is False; the message names the first
            offending item and counts the rest.
    """
    if findings and not allow:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise LeakageError(
            f"leakage between training and test: {findings[0]}{more}; "
            "fix the splits, or pass --allow-leakage to evaluate anyway"
        )
    return findings
