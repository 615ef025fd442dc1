//! flagpost: a validating edge proxy for Unleash feature flags.
//!
//! SDKs call flagpost instead of the Unleash server. The source follows the flow:
//!
//! ```text
//! WHERE SNAPSHOTS COME FROM                WHERE THEY ARE KEPT          WHERE REQUESTS ARE SERVED
//! offline: features file (offline.rs) ─┐
//! edge: startup tokens validated and   │
//!   polled (refresh/), or the upstream ├─► publish::Publisher ─► snapshot::Store ◄─ server::handler
//!   stream followed (refresh/follow.rs)│   compiles (blocking     one Arc<Snapshot>   (one gate:
//!   merged (refresh/sources.rs)        │   pool), swaps, counts,  per environment,    Store::admit)
//! edge on a fleet: the poller's        │   announces a           read lock-free
//!   snapshots read from Redis          │   change::ChangeSet
//!   (fleet/snapshots.rs)               │   per environment, keeps
//! edge: backup at start (refresh/      ┘   a short history ─────► stream::Streams: SSE to SDKs
//!   backup.rs, persist/)                   (delta: rendered once  and /api/client/delta
//!                                           per filter)            (server::handler::stream)
//!
//! A request: server (accept, TLS, timeouts, limits, spans) ─► server::route ─► auth (token →
//! Access{kind, scope}: the configured table, or caches in front of upstream /edge/validate)
//! ─► the scope gate, once ─► server::handler::api: Client API (body memoised per snapshot and
//! filter, ETag) · Frontend API (evaluate: context, one evaluation per flag) · usage (bounded
//! aggregation, forwarded by usage::forward) ─► server::error maps every refusal to JSON.
//!
//! Background work is owned by the task tracker of `start::run_with` and stopped by one
//! cancellation token: the offline file watcher, refresh (one poll per startup scope),
//! auth::Validator (the validation lanes) and auth::revalidate, usage::forward, remote write,
//! the instance-data reporter, and the streams' ticker (heartbeats, token checks when verdicts
//! or scopes change). Each gets narrow handles (the store, the publisher, the authenticator,
//! the usage buffer, the metrics); only the instance-data reporter reads the `App`, for what it
//! reports. Each SDK stream's task is owned by `stream::Streams`, which the shutdown waits for.
//! ```
//!
//! The layers, bottom first; a module uses only those below it, and the test
//! `tests/it/layers.rs` fails on any import that goes up (or on a cycle between the files of
//! one module): token, json, backoff, watch, sse, explain · document, config · evaluate, otel ·
//! snapshot, metrics · change, upstream · delta, publish, auth, persist, remote_write · stream,
//! fleet, offline · refresh · usage · server · instance · start.
//!
//! Modules, one job each:
//! - [`config`]: `config.toml` < environment < flags, validated into one [`config::Config`]
//!   (`config/mode.rs`: the offline and edge sections; `config/edge_compat.rs`: Unleash Edge's
//!   settings flagpost does not use, warned about or refused; `config/otel/`: `[otel]`).
//! - [`token`]: token shapes, redaction and digests; `token/scope.rs`: [`token::Scope`] and the
//!   scope rule (`covers`).
//! - [`document`]: a Client API document as received (features, segments, merge, compact).
//! - [`offline`]: features from a local file, watched and reloaded.
//! - [`upstream`]: the HTTP client of the upstream (the Unleash server, another flagpost, or
//!   Edge), with a client span per call (`upstream/trace.rs`).
//! - [`refresh`]: edge mode's startup validation and polls; `refresh/sources.rs`: which
//!   startup tokens upstream accepts, which are polled, what a revocation leaves served and how
//!   their answers merge; `refresh/follow.rs`: following the upstream stream (where to resume,
//!   when to poll instead); `refresh/backup.rs`: the backup.
//! - [`persist`]: the backup's objects, in a folder or an S3 bucket (`persist/place.rs`).
//! - [`change`]: what one publish changed ([`change::ChangeSet`], `diff`), below both the
//!   publisher that announces it and `delta` that renders it.
//! - [`publish`]: the one publish path: compile, swap, metrics, change sets and their ids, the
//!   history clients resume from.
//! - [`delta`]: a change set as the delta events one filter sees, rendered once; SSE frames.
//! - [`stream`]: the open SDK streams: their limit, tasks, heartbeats and why they end.
//! - [`sse`]: the Server-Sent Events parser (the upstream stream, and the tests' client).
//! - [`fleet`]: a fleet on one Redis (a server, Sentinels or a cluster): the poller's lease,
//!   snapshots written (fenced by the lease) and followed, shared token verdicts, booting from the
//!   store; `fleet/shared.rs` every Redis key and call, `fleet/connect.rs` the connections per
//!   shape.
//! - [`snapshot`]: immutable per-environment snapshots, the serving scopes, and the arc-swap
//!   [`snapshot::Store`].
//! - [`auth`]: token → [`auth::Access`]; `auth/remote.rs` the verdict caches, `auth/budget.rs`
//!   the `/edge/validate` budgets, `auth/validator.rs` the validation lanes, `auth/shared.rs`
//!   what validation needs from a fleet ([`auth::SharedVerdicts`], which the fleet implements).
//! - [`evaluate`]: flagpost's own evaluation of the flags yggdrasil compiles
//!   (`evaluate/engine.rs`) and the Frontend API response; `evaluate/context.rs`: the SDK
//!   context from a query or a body; `evaluate/volatility.rs`: what chance and the clock decide;
//!   `evaluate/memo.rs`: the bounded memo of remembered answers; `evaluate/properties.rs`: the
//!   generated-input properties against yggdrasil.
//! - [`usage`]: SDK usage metrics and registrations, bounded (`usage/body.rs` reads them),
//!   forwarded upstream (`usage/forward.rs`); [`instance`]: flagpost's own instance data upstream.
//! - [`server`]: accept loops, TLS, connection timeouts, the router, CORS, errors; `server/app.rs`
//!   [`App`], what a request handler reads, and readiness; `server/handler/` the request pipeline
//!   and the API handlers (`stream.rs`: streaming and delta; `backstage.rs`: explain, the
//!   inspection endpoints, downstream Edge reports; `trace.rs`: the request's id and span);
//!   `server/refusal.rs`: the log lines requests may cause, within a budget;
//!   `server/downstream.rs`: downstream instances, bounded.
//! - `start.rs`: [`run_with`]: starting each mode, owning the background work, draining, and
//!   edge mode's last work at shutdown.
//! - [`otel`]: OpenTelemetry traces: the subscriber (log and OTel layer, trace ids in JSON
//!   lines), head sampling, the bounded span queue and its export over OTLP, `traceparent` in
//!   and out. The spans themselves are made where the work is (the request span, upstream
//!   calls, the publisher, the validation lanes, the fleet).
//! - [`metrics`]: the Prometheus registry; [`remote_write`]: pushing it (Edge's remote write);
//!   [`explain`]: `flagpost explain`'s text; [`json`]: the JSON written by hand on hot paths;
//!   [`backoff`]: retry delays; [`watch`]: noticing that a file changed.
//!
//! [`run`] (and [`run_with`], for HTTPS too) takes the configuration, bound listeners and a
//! shutdown future, so tests start the real server in-process on port 0.

pub mod auth;
pub mod backoff;
pub mod change;
pub mod config;
pub mod delta;
pub mod document;
pub mod evaluate;
pub mod explain;
pub mod fleet;
pub mod instance;
pub mod json;
pub mod metrics;
pub mod offline;
pub mod otel;
pub mod persist;
pub mod publish;
pub mod refresh;
pub mod remote_write;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod stream;
pub mod token;
pub mod upstream;
pub mod usage;
pub mod watch;

mod start;

pub use server::{App, Listeners};
pub use start::{run, run_with, RunError};
