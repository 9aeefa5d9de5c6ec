"""bench/quality/run.py's bookkeeping: which jobs a suite makes, and ``--merge`` replacing only the
runs it re-made in a results file (the rest, and the file's protocol wall time, stay)."""
import json

import pytest

pytest.importorskip("sklearn")  # bench.quality.tasks builds its data with it

from bench.quality import run  # noqa: E402


class _Pool:
    """In-process stand-in for the worker pool."""

    def __init__(self, *a):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def imap_unordered(self, f, jobs):
        return map(f, jobs)


class _InProcess:
    Pool = _Pool


def _run(method, lr, seed, loss, rule=None, task="digits_mlp"):
    return dict(task=task, seed=seed, method=method, lr=lr, rule=rule, final_train_loss=loss)


def test_merged_replaces_matching_runs_in_place_and_appends_new_ones():
    old = [_run("sgd", 0.1, 0, 1.0), _run("qlab_sgd", 0.1, 0, 2.0), _run("qlab_sgd", 0.1, 0, 3.0, rule="x"),
           _run("qlab_sgd", 0.1, 1, 4.0)]
    new = [_run("qlab_sgd", 0.1, 0, 20.0), _run("qlab_sgd", 1.0, 0, 50.0)]
    out = run.merged(old, new)
    assert [r["final_train_loss"] for r in out] == [1.0, 20.0, 3.0, 4.0, 50.0]
    assert run.merged(old, []) == old and run.merged([], new) == new


def test_main_suite_bases_select_plain_qlab_and_peers():
    jobs = run.jobs_for("digits_mlp", "main", [], (0,), run.GRID)
    methods = {j["method"] for j in jobs}
    assert methods == set(run.BASES) | {"qlab_" + b for b in run.BASES} | set(run.PEERS)
    assert all(j["rule"] is None for j in jobs if j["method"].startswith("qlab_"))


def test_merge_keeps_the_other_runs_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    made = []

    def fake_run_one(job):
        made.append(job)
        return dict(job, final_train_loss=7.0)

    monkeypatch.setattr(run, "run_one", fake_run_one)
    monkeypatch.setattr(run, "get_context", lambda kind: _InProcess)
    path = tmp_path / "digits_mlp__main.json"
    old = [_run("sgd", 0.1, 0, 1.0), _run("qlab_momentum", 0.1, 0, 2.0), _run("prodigy", 1.0, 0, 3.0),
           _run("qlab_momentum", 0.1, 5, 4.0)]
    path.write_text(json.dumps(dict(task="digits_mlp", suite="main", wall_s=123.0, workers=2, runs=old)))
    run.main(["--task", "digits_mlp", "--bases", "momentum", "--seeds", "0", "--merge"])
    data = json.loads(path.read_text())
    assert {j["method"] for j in made} == {"momentum", "qlab_momentum"}  # no peers unless asked
    assert len(made) == 2 * len(run.GRID)
    by = {run.run_key(r): r["final_train_loss"] for r in data["runs"]}
    assert by[run.run_key(old[0])] == 1.0 and by[run.run_key(old[2])] == 3.0  # other bases, peers
    assert by[run.run_key(old[3])] == 4.0  # another seed
    assert by[run.run_key(old[1])] == 7.0  # re-made
    assert len(data["runs"]) == len(old) - 1 + len(made)
    assert data["wall_s"] == 123.0 and len(data["merges"]) == 1

    made.clear()
    run.main(["--task", "digits_mlp", "--bases", "qlab_momentum", "--seeds", "0", "--merge"])
    assert {j["method"] for j in made} == {"qlab_momentum"}

    run.main(["--task", "digits_mlp", "--bases", "momentum", "--seeds", "0"])  # no --merge: anew
    data = json.loads(path.read_text())
    assert len(data["runs"]) == 2 * len(run.GRID) and "merges" not in data


def test_edge_prototype_sets_every_band_and_labels_its_runs(monkeypatch):
    """``--edge x`` runs the `_edge` rules with the band [m, x·m]: the 1.5 rule at 1.35 is, bit for
    bit, the library's `_edge135` rule; the runs it writes are labelled so that no choice mistakes
    them for the library rule's."""
    from qlab_fused import reference
    saved = dict(reference.EDGE_OF)
    job = dict(task="waves_cnn1d", seed=0, method="qlab_sgd", lr=1e-2)
    try:
        wide = run.run_one(dict(job, rule="safeguarded_rel_edge_still_restart"))["final_train_loss"]
        narrow = run.run_one(dict(job, rule="safeguarded_rel_edge135_still_restart"))["final_train_loss"]
        assert wide != narrow
        run.set_edge(1.35)
        assert run.run_one(dict(job, rule="safeguarded_rel_edge_still_restart"))["final_train_loss"] == narrow
    finally:
        reference.EDGE_OF.update(saved)
    assert reference.EDGE_OF == saved


def test_edge_runs_are_labelled(tmp_path, monkeypatch):
    from qlab_fused import reference
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(reference, "EDGE_OF", dict(reference.EDGE_OF))  # set_edge writes this copy
    seen = []
    monkeypatch.setattr(run, "run_one", lambda job: seen.append(reference.EDGE_OF[job["rule"]]) or
                        dict(job, final_train_loss=1.0))
    monkeypatch.setattr(run, "get_context", lambda kind: _InProcess)
    run.main(["--task", "digits_mlp", "--suite", "ablation", "--bases", "sgd", "--seeds", "0",
              "--rules", "safeguarded_rel_edge_still_restart", "--edge", "1.4", "--tag", "t"])
    data = json.loads((tmp_path / "digits_mlp__t.json").read_text())
    assert seen == [1.4] * len(run.GRID)
    assert {r["rule"] for r in data["runs"]} == {"safeguarded_rel_edge_still_restart@EDGE=1.4"}


def _plain_runs(losses, seed=0, method="sgd", task="digits_mlp"):
    return [dict(_run(method, lr, seed, v, task=task), tag="main") for lr, v in losses.items()]


def test_past_edge_jobs_go_a_decade_past_the_best_lr_where_it_is_the_largest_or_smallest_run():
    top = _plain_runs({1e-2: 3.0, 1e-1: 2.0, 1.0: 1.0})                    # best at the top
    low = _plain_runs({1e-4: 1.0, 1e-3: 2.0}, method="adam")                # best at the bottom
    inside = _plain_runs({1e-1: 2.0, 1.0: 1.0, 10.0: None}, method="momentum")  # 10 diverged
    jobs = run.past_edge_jobs("digits_mlp", (0,), run.BASES, top + low + inside)
    assert sorted((j["method"], j["lr"]) for j in jobs) == [("adam", 1e-5), ("sgd", 10.0)]
    assert all(j["task"] == "digits_mlp" and j["seed"] == 0 for j in jobs)
    # another seed, task or base is not read; the limits stop the search
    assert run.past_edge_jobs("digits_mlp", (1,), run.BASES, top) == []
    assert run.past_edge_jobs("other", (0,), run.BASES, top) == []
    assert run.past_edge_jobs("digits_mlp", (0,), ("momentum",), top) == []
    sgd = ("sgd",)
    assert run.past_edge_jobs("digits_mlp", (0,), sgd, _plain_runs({100.0: 2.0, 1e3: 1.0})) == []
    # a tie goes to the smaller lr, which is then inside
    tie = _plain_runs({0.01: 2.0, 0.1: 1.0, 1.0: 1.0})
    assert run.past_edge_jobs("digits_mlp", (0,), sgd, tie) == []


def test_past_edge_suite_runs_decade_by_decade_until_the_best_lr_is_inside(tmp_path, monkeypatch):
    """Plain SGD's loss falls up to lr 100 and diverges at 1000: the suite runs 10, 100 and 1000 (in
    three rounds), merges them into one file, and leaves the main file alone."""
    from bench.quality import analyze
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(analyze, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "get_context", lambda kind: _InProcess)
    curve = {1e-4: 9.0, 1e-3: 8.0, 1e-2: 7.0, 0.1: 6.0, 1.0: 5.0, 10.0: 4.0, 100.0: 3.0, 1e3: None}
    made = []
    monkeypatch.setattr(run, "run_one", lambda job: made.append(job["lr"]) or
                        dict(job, final_train_loss=curve[job["lr"]]))
    main = dict(task="digits_mlp", suite="main", wall_s=1.0, workers=2,
                runs=[_run("sgd", lr, 0, curve[lr]) for lr in run.GRID])
    (tmp_path / "digits_mlp__main.json").write_text(json.dumps(main))
    run.main(["--task", "digits_mlp", "--suite", "past_edge", "--bases", "sgd", "--seeds", "0"])
    assert made == [10.0, 100.0, 1e3]
    data = json.loads((tmp_path / "digits_mlp__past_edge.json").read_text())
    assert [r["lr"] for r in data["runs"]] == [10.0, 100.0, 1e3] and data["suite"] == "past_edge"
    assert json.loads((tmp_path / "digits_mlp__main.json").read_text()) == main
    made.clear()
    run.main(["--task", "digits_mlp", "--suite", "past_edge", "--bases", "sgd", "--seeds", "0"])
    assert made == []  # nothing left at an edge
