"""The leakage guard: shared subjects or content hashes between training and test are refused."""

from __future__ import annotations

import pytest

from mocomri.data.manifest import ManifestRow
from mocomri.errors import LeakageError
from mocomri.eval.leakage import check_leakage, find_leakage, pretraining_findings


def _row(path: str, subject: str, split: str, sha1: str = "") -> ManifestRow:
    return ManifestRow(path=path, subject=subject, label="a", split=split, sha1=sha1)


TRAIN = [_row("sub-01/a.nii.gz", "sub-01", "train", "aaa111"), _row("sub-02/b.nii.gz", "sub-02", "train", "bbb222")]


def test_check_leakage__clean_split_passes() -> None:
    test = [_row("sub-03/c.nii.gz", "sub-03", "test", "ccc333")]
    assert check_leakage(find_leakage(TRAIN, test)) == []


def test_check_leakage__shared_subject_raises_naming_the_item() -> None:
    test = [_row("sub-02/other.nii.gz", "sub-02", "test", "ddd444")]
    with pytest.raises(LeakageError, match=r"'sub-02/other\.nii\.gz' shares subject 'sub-02'.*'sub-02/b\.nii\.gz'"):
        check_leakage(find_leakage(TRAIN, test))


def test_check_leakage__shared_sha1_raises_naming_the_item() -> None:
    test = [_row("sub-09/copy.nii.gz", "sub-09", "test", "aaa111")]
    with pytest.raises(LeakageError, match=r"'sub-09/copy\.nii\.gz' has the same content.*'sub-01/a\.nii\.gz'"):
        check_leakage(find_leakage(TRAIN, test))


def test_check_leakage__counts_further_findings() -> None:
    test = [_row("x", "sub-01", "test"), _row("y", "sub-02", "test"), _row("z", "sub-05", "test", "bbb222")]
    with pytest.raises(LeakageError, match=r"\(and 2 more\).*--allow-leakage"):
        check_leakage(find_leakage(TRAIN, test))


def test_check_leakage__allow_flag_returns_the_findings() -> None:
    test = [_row("sub-01/again.nii.gz", "sub-01", "test", "aaa111")]
    findings = check_leakage(find_leakage(TRAIN, test), allow=True)
    assert len(findings) == 2  # the subject and the content hash
    assert all("sub-01/again.nii.gz" in f for f in findings)


def test_find_leakage__empty_hashes_are_not_compared() -> None:
    train = [_row("a", "s1", "train", "")]
    test = [_row("b", "s2", "test", "")]
    assert find_leakage(train, test) == []


def test_pretraining_findings__flags_pretraining_on_the_tested_split(tmp_path) -> None:
    manifest = tmp_path / "m.csv"
    assert pretraining_findings(str(manifest), ["train", "test"], manifest, "test")
    assert not pretraining_findings(str(manifest), ["train", "unlabeled"], manifest, "test")
    assert not pretraining_findings(str(tmp_path / "other.csv"), ["test"], manifest, "test")
