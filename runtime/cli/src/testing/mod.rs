//! Offline plugin testing (`eventplug test`): fixtures on disk and the state the test-only imports
//! of module `eventplug_test` work on (docs/abi.md, "Testing plugins"), linked into a test engine
//! as its host extension.

mod fixtures;
mod imports;
mod prototype;

pub use fixtures::FixtureSet;
pub use imports::TestHarness;

use std::sync::Arc;

/// The state of an instance under `eventplug test`.
#[derive(Debug)]
pub struct TestState {
    /// The project's fixtures.
    pub fixtures: Arc<FixtureSet>,
    /// What the test has recorded.
    pub record: TestRecord,
    /// The deadline each handled event gets, in epoch ticks (the plugin's timeout).
    pub call_deadline_ticks: u64,
    /// The largest response a handled event may return.
    pub max_output: u64,
}

/// What a test run has recorded so far.
#[derive(Debug, Default)]
pub struct TestRecord {
    /// The result of the last `handle_event`: forwarded JSON, empty when skipped, the error message
    /// when failed.
    pub last_result: Vec<u8>,
    /// Alerts declared, as `Alert` message bytes.
    pub alerts: Vec<Vec<u8>>,
    /// Teleport API requests declared: kind (1 CreateLock, 2 DeleteLock) and message bytes.
    pub api_requests: Vec<(i32, Vec<u8>)>,
}
