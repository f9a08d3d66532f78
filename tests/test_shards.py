"""shards(): the same split on every machine and run, and a changed split refused."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from resumable import InputChangedError, Resumable, Shard, UsageError, inspect, shards

from jobs.object_storage import BUCKET


def test_by_position_item_j_goes_to_shard_j_modulo_n(tmp_path: Path) -> None:
    parts = shards(list(range(10)), 3, job=tmp_path)
    assert [part.index for part in parts] == [0, 1, 2]
    assert [list(part.items) for part in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [Path(part.state).name for part in parts] == [
        "shard-00000-of-00003.state",
        "shard-00001-of-00003.state",
        "shard-00002-of-00003.state",
    ]
    assert all(Path(part.state).parent == tmp_path for part in parts)


def test_an_input_that_grows_keeps_every_shards_first_items(tmp_path: Path) -> None:
    before = shards(range(100), 4, job=tmp_path)
    after = shards(range(150), 4, job=tmp_path)
    for old, new in zip(before, after, strict=True):
        assert list(new.items[: len(old.items)]) == list(old.items)


def test_a_range_stays_a_range_and_an_iterator_is_read_once(tmp_path: Path) -> None:
    assert shards(range(10), 3, job=tmp_path / "a")[1].items == range(1, 10, 3)
    parts = shards(iter("abcde"), 2, job=tmp_path / "b")
    assert [list(part.items) for part in parts] == [["a", "c", "e"], ["b", "d"]]


def test_more_shards_than_items_leaves_some_empty_and_they_finish_at_once(
    tmp_path: Path,
) -> None:
    parts = shards(["x"], 3, job=tmp_path)
    assert [list(part.items) for part in parts] == [["x"], [], []]
    with Resumable(parts[2].state) as r:
        assert list(r.iterate(parts[2].items)) == []
    assert inspect(parts[2].state).finished


def test_by_key_every_item_lands_where_its_key_hashes_whatever_its_position(
    tmp_path: Path,
) -> None:
    urls = [f"https://example.com/{i}" for i in range(500)]
    parts = shards(urls, 8, job=tmp_path / "a", key=str)
    reordered = shards(list(reversed(urls)), 8, job=tmp_path / "b", key=str)
    assert sorted(item for part in parts for item in part.items) == sorted(urls)
    for part, other in zip(parts, reordered, strict=True):
        assert set(part.items) == set(other.items)
        assert list(part.items) == [url for url in urls if url in set(part.items)]  # in order
    assert min(len(part.items) for part in parts) > 30  # spread, not all in one


def test_by_key_the_split_is_the_same_in_another_process_with_another_hash_seed(
    tmp_path: Path,
) -> None:
    """blake2b, not Python's hash, which is salted per process for str and bytes."""
    keys: list[str | bytes | int] = [f"key-{i}" for i in range(200)]
    keys += [b"raw", 12345]
    mine = shards(keys, 7, job=tmp_path / "here", key=lambda k: k)
    script = (
        "import sys, orjson; from resumable import shards\n"
        "keys = [f'key-{i}' for i in range(200)] + [b'raw', 12345]\n"
        "parts = shards(keys, 7, job=sys.argv[1], key=lambda k: k)\n"
        "print(orjson.dumps([[str(k) for k in p.items] for p in parts]).decode())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "there")],
        env=env,
        capture_output=True,
        check=True,
    )
    assert orjson.loads(done.stdout) == [[str(k) for k in part.items] for part in mine]
    # Pinned: a change of the hash would move every item of every job already started.
    assert [len(part.items) for part in mine] == _pinned_sizes()


def _pinned_sizes() -> list[int]:
    return [28, 24, 33, 28, 23, 43, 23]


def test_a_key_of_another_type_is_refused_naming_what_works(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"returned float 1\.5: return a str, bytes or int"):
        shards([1.5], 2, job=tmp_path, key=lambda item: item)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "4"])
def test_a_number_of_shards_that_is_not_a_whole_number_from_1_is_refused(
    tmp_path: Path, n: object
) -> None:
    with pytest.raises(UsageError, match="must be a whole number of shards"):
        shards(range(3), n, job=tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "shards.json").exists()


def test_a_rerun_with_another_n_is_refused_naming_the_first(tmp_path: Path) -> None:
    shards(range(100), 64, job=tmp_path)
    shards(range(120), 64, job=tmp_path)  # the same split: fine
    with pytest.raises(InputChangedError, match=r"split into 64 shards by position .* now into 32"):
        shards(range(100), 32, job=tmp_path)
    with pytest.raises(InputChangedError, match=r"shards\(\.\.\., n=64\) with no key="):
        shards(range(100), 64, job=tmp_path, key=str)
    assert orjson.loads((tmp_path / "shards.json").read_bytes()) == {
        "format": 1,
        "shards": 64,
        "split": "position",
    }


def test_a_damaged_manifest_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "shards.json").write_bytes(b"{not json")
    with pytest.raises(InputChangedError, match="not a shards manifest"):
        shards(range(3), 2, job=tmp_path)
    assert (tmp_path / "shards.json").read_bytes() == b"{not json"


@pytest.mark.parametrize("where", ["folder", "file URL"])
def test_a_manifest_of_up_to_64_kib_is_read_and_one_byte_more_is_refused(
    tmp_path: Path, where: str
) -> None:
    """The manifest's bound, on a local folder and a URL prefix alike: one padded with
    spaces (another tool's, say) to exactly 64 KiB is read, and matches; one of 64 KiB and
    a byte is refused as no manifest, not read whole (was, by URL: a bare TooLargeError),
    and left as it is."""
    folder = tmp_path / "crawl"
    folder.mkdir()
    job = str(folder) if where == "folder" else f"file://{folder}/"
    manifest = orjson.dumps({"format": 1, "shards": 2, "split": "position"})
    for size, accepted in [(64 * 1024, True), (64 * 1024 + 1, False)]:
        padded = manifest + b" " * (size - len(manifest))
        (folder / "shards.json").write_bytes(padded)
        if accepted:
            assert [list(part.items) for part in shards(range(4), 2, job=job)] == [[0, 2], [1, 3]]
        else:
            with pytest.raises(InputChangedError, match="is not a shards manifest"):
                shards(range(4), 2, job=job)
        assert (folder / "shards.json").read_bytes() == padded


def test_the_manifest_leaves_no_temp_file_and_the_folder_is_made(tmp_path: Path) -> None:
    job = tmp_path / "deep" / "crawl"
    shards(range(3), 2, job=job)
    shards(range(3), 2, job=job)
    assert sorted(path.name for path in job.iterdir()) == ["shards.json"]


def test_a_shard_is_picklable_and_frozen(tmp_path: Path) -> None:
    part = shards(range(10), 2, job=tmp_path)[1]
    assert pickle.loads(pickle.dumps(part)) == part
    assert type(part) is Shard
    with pytest.raises(AttributeError):
        part.index = 3  # type: ignore[misc]


def test_each_shard_is_a_job_of_its_own(tmp_path: Path) -> None:
    parts = shards(range(30), 3, job=tmp_path)
    for part in parts[:2]:
        with Resumable(part.state) as r:
            for _ in r.iterate(part.items):
                pass
    assert [inspect(part.state).finished for part in parts[:2]] == [True, True]
    assert not Path(parts[2].state).exists()


@pytest.mark.parametrize("slash", ["/", ""])
def test_a_url_prefix_names_state_objects_under_it_and_keeps_the_manifest_there(
    slash: str,
) -> None:
    pytest.importorskip("obstore")
    bucket = f"memory://shards-test-{len(slash)}"
    parts = shards(range(6), 2, job=f"{bucket}/crawl{slash}")
    assert [part.state for part in parts] == [
        f"{bucket}/crawl/shard-00000-of-00002.state",
        f"{bucket}/crawl/shard-00001-of-00002.state",
    ]
    with pytest.raises(InputChangedError, match=r"into 2 shards .*/crawl/shards\.json"):
        shards(range(6), 3, job=f"{bucket}/crawl{slash}")


def test_a_file_url_prefix_keeps_the_manifest_in_that_folder(tmp_path: Path) -> None:
    pytest.importorskip("obstore")
    prefix = f"file://{tmp_path}/crawl/"
    parts = shards(range(6), 2, job=prefix)
    assert parts[0].state == f"{prefix}shard-00000-of-00002.state"
    assert orjson.loads((tmp_path / "crawl" / "shards.json").read_bytes())["shards"] == 2
    with pytest.raises(InputChangedError):
        shards(range(6), 5, job=prefix)


def test_an_s3_prefix_keeps_the_manifest_in_the_bucket(s3_server: str) -> None:
    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex}/crawl/"
    parts = shards(range(6), 2, job=prefix)
    assert parts[1].state == f"{prefix}shard-00001-of-00002.state"
    shards(range(9), 2, job=prefix)  # the same split, a longer input: fine
    with pytest.raises(InputChangedError, match=r"into 2 shards by position"):
        shards(range(6), 3, job=prefix)
    with Resumable(parts[1].state) as r:
        assert list(r.iterate(parts[1].items)) == [1, 3, 5]
    assert inspect(parts[1].state).finished
