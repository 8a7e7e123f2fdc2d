"""The database schema as an ordered list of migrations (never edit one that shipped).

``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``; ``Database`` applies the
missing ones in order, each in its own transaction, and records the version.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

_V1 = """
-- audit: body is the exact canonical bytes that were hashed; agent/kind are index copies
CREATE TABLE audit_entries (
    seq       INTEGER PRIMARY KEY,
    ts        TEXT NOT NULL,
    agent     TEXT,
    kind      TEXT NOT NULL,
    body      BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE INDEX audit_by_agent ON audit_entries(agent, seq);
CREATE INDEX audit_by_kind ON audit_entries(kind, seq);
-- every complete Merkle subtree of level >= 1 (level 0 = leaf_hash(entry hash))
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE signed_heads (
    size      INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    timestamp TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    parent      TEXT,
    manifest    TEXT NOT NULL,
    state       TEXT NOT NULL,
    persistent  INTEGER NOT NULL DEFAULT 0,
    pid         INTEGER,
    pgid        INTEGER,
    created_at  TEXT NOT NULL,
    exited_at   TEXT,
    exit_reason TEXT,
    exit_record TEXT
);
CREATE INDEX agents_by_state ON agents(state);
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT,
    parent_id  TEXT,
    token      BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX tokens_by_agent ON tokens(agent_id);
CREATE TABLE revocations (
    token_id   TEXT PRIMARY KEY,
    revoked_at TEXT NOT NULL,
    reason     TEXT NOT NULL
);
CREATE TABLE approvals (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT,
    request    TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deadline   TEXT,
    decided_at TEXT,
    decision   TEXT
);
CREATE INDEX approvals_by_state ON approvals(state);
CREATE TABLE mailbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id     TEXT NOT NULL,
    sender       TEXT,
    message      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX mailbox_pending ON mailbox(agent_id, delivered_at, id);
CREATE TABLE conversations (
    agent_id TEXT NOT NULL,
    turn     INTEGER NOT NULL,
    message  TEXT NOT NULL,
    PRIMARY KEY (agent_id, turn)
) WITHOUT ROWID;
CREATE TABLE kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""

# v2: the kernel's trusted capability state behind the one writer. ``tokens`` (never written:
# it would have held token bytes, which carry the key that appends blocks) becomes
# ``issued_tokens`` (what was issued to whom, never the bytes); ``token_uses`` holds the
# invocation counts; agent state and persistent agents move here from a side connection, and
# saved state keeps the taint labels of the context that saved it.
_V2 = """
DROP TABLE tokens;
CREATE TABLE issued_tokens (
    id              TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    parent_id       TEXT,
    chain           TEXT NOT NULL,
    grants          TEXT NOT NULL,
    max_invocations INTEGER,
    expires_at      REAL,
    issued_at       TEXT NOT NULL,
    lineage         TEXT
);
CREATE INDEX issued_by_holder ON issued_tokens(holder);
CREATE INDEX issued_by_lineage ON issued_tokens(lineage, issued_at);
CREATE TABLE token_uses (
    token_id TEXT PRIMARY KEY,
    used     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_state (
    identity   TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (identity, key)
);
ALTER TABLE agent_state ADD COLUMN taint TEXT NOT NULL DEFAULT '[]';
CREATE TABLE IF NOT EXISTS persistent_agents (
    name       TEXT PRIMARY KEY,
    manifest   BLOB NOT NULL,
    updated_at REAL NOT NULL
);
"""

# v3: the start time (clock ticks since boot, /proc/<pid>/stat field 22) of an agent's recorded
# pid, so that a later kernel identifies a leftover process by (pid, start time), never by a
# reused pid or a command line
_V3 = """
ALTER TABLE agents ADD COLUMN start_time INTEGER;
"""

# v4: the package trust state (docs/packages.md) moves here from files under registry/: the
# trust policy (which keys count for which name patterns; which patterns accept unsigned
# packages), and the highest version seen per package name (the rollback rule). ``seq``
# keeps the order rules were added in.
_V4 = """
CREATE TABLE trust_keys (
    keyid      TEXT NOT NULL,
    public_key TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (keyid, pattern)
) WITHOUT ROWID;
CREATE TABLE trust_unsigned (
    pattern TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE versions_seen (
    name    TEXT PRIMARY KEY,
    version TEXT NOT NULL
) WITHOUT ROWID;
"""

# v5: the HTTP API (rpc/http.py, kernel/http_api.py). ``http_tokens`` holds operator tokens
# for HTTP callers: only a SHA-256 of each secret (the secret is shown once, at creation);
# ``http_idempotency`` keeps the first response to a POST sent with an ``Idempotency-Key``
# (per token name) until it expires, so a retry returns it instead of running again.
_V5 = """
CREATE TABLE http_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL
);
CREATE TABLE http_idempotency (
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    method       TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    status       INTEGER NOT NULL,
    response     BLOB NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (principal, key)
) WITHOUT ROWID;
CREATE INDEX http_idempotency_by_age ON http_idempotency(created_at);
"""

# v6: one database behind one writer for every table (DESIGN.md §9). Episodic memory
# (memory/store.py) had its own connection and its own migration list (``memory_meta``, whose
# only version, 1, created ``memories``); its tables are now created here, and a home whose
# memory store already made them keeps its rows (``IF NOT EXISTS``). ``memory_versions`` counts
# the writes per owner, so a reader can tell from inside its own snapshot whether a cached
# vector index is current. ``mailbox`` and ``conversations`` were never written (mailboxes
# are in memory, a conversation is saved state in ``agent_state``): dropped.
_V6 = """
CREATE TABLE IF NOT EXISTS memories (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    category   TEXT NOT NULL CHECK (category IN ('fact','observation','decision','preference')),
    content    TEXT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    embedder   TEXT NOT NULL,
    dim        INTEGER NOT NULL,
    embedding  BLOB NOT NULL,
    created_at REAL NOT NULL,
    replaced   TEXT
);
CREATE INDEX IF NOT EXISTS memories_owner ON memories(owner, embedder);
DROP TABLE IF EXISTS memory_meta;
CREATE TABLE memory_versions (
    owner   TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
DROP TABLE mailbox;
DROP TABLE conversations;
"""

# v7: MCP tool pins (kernel/mcp_tools.py, core/mcp_pinning.py). One row per approved tool of a declared
# MCP server: the digest of its description and input schema when approved (and both, so the
# operator can see what was approved), who approved it and when. A tool whose listing no
# longer hashes to its pin is disabled until re-approved.
_V7 = """
CREATE TABLE mcp_pins (
    server       TEXT NOT NULL,
    tool         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    description  TEXT NOT NULL,
    input_schema TEXT NOT NULL,
    approved_by  TEXT NOT NULL,
    approved_at  REAL NOT NULL,
    PRIMARY KEY (server, tool)
) WITHOUT ROWID;
"""

# v8: packages (docs/packages.md). ``pushed_blobs`` is the record of what each registry host
# holds, by repository (packages/pushed.py: a cache that lets a push skip or mount a blob),
# which was a file per host under registry/pushed/ (imported once, then removed); ``seq``
# orders the rows, most recently written last. ``snapshot_given`` counts, per snapshot
# digest and grant group (its index in the snapshot document), the invocations restores of
# that snapshot were given: a restore mints only what the snapshot recorded minus that
# (kernel/snapshots_api.py), so restoring one snapshot N times never yields N times its count.
_V8 = """
CREATE TABLE pushed_blobs (
    host   TEXT NOT NULL,
    digest TEXT NOT NULL,
    repo   TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (host, digest, repo)
) WITHOUT ROWID;
CREATE INDEX pushed_by_seq ON pushed_blobs(host, seq);
CREATE TABLE snapshot_given (
    digest TEXT NOT NULL,
    grp    INTEGER NOT NULL,
    given  INTEGER NOT NULL,
    PRIMARY KEY (digest, grp)
) WITHOUT ROWID;
"""

# v9: files a tainted context wrote through file_write/file_edit outside its own workspace
# (kernel/file_taint.py): by (device, inode), the labels a later reader's context takes on
# (a JSON list of ``source:origin`` strings) and the host path it was written at
_V9 = """
CREATE TABLE file_taint (
    dev        INTEGER NOT NULL,
    ino        INTEGER NOT NULL,
    path       TEXT NOT NULL,
    labels     TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
"""

# v10: the snapshots this kernel wrote itself (store/snapshots_made.py: a restore of one of them
# mints its recorded grants unasked), which was an empty file per snapshot under registry/made/.
# ``imports_due`` names the one-time imports of side files still to run (store/side_files.py):
# the first start after this migration imports registry/made/ and deletes its row in one
# transaction, so a file put there later is never read.
_V10 = """
CREATE TABLE snapshots_made (
    digest TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE imports_due (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
INSERT INTO imports_due (name) VALUES ('registry/made');
"""

# v11: a memory carries the taint labels of the context that stored it (a JSON list of
# ``source:origin`` strings); a query labels its reader with those of the records it returns
# (tools/memory.py), as agent.state_load does with saved state
_V11 = """
ALTER TABLE memories ADD COLUMN taint TEXT NOT NULL DEFAULT '[]';
"""

MIGRATIONS: list[str] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11]
