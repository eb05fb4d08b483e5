//! What a plugin declares during a call besides its verdict: effects and log lines.

use eventplug_proto::v1 as pb;

/// An effect a plugin declared during one event call. The host carries it out after the event's
/// fate is known, once per event.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// The plugin that declared it.
    pub plugin: String,
    /// What to do.
    pub kind: EffectKind,
}

/// The kinds of effect.
#[derive(Debug, Clone, PartialEq)]
pub enum EffectKind {
    /// Raise an alert.
    Alert(Box<pb::Alert>),
    /// Create or replace a Teleport lock.
    CreateLock(Box<pb::CreateLock>),
    /// Delete a Teleport lock.
    DeleteLock(pb::DeleteLock),
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            EffectKind::Alert(alert) => {
                let severity = pb::Severity::try_from(alert.severity)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN");
                write!(
                    f,
                    "alert from {}: [{severity}] {}",
                    self.plugin, alert.message
                )?;
                for (key, value) in &alert.metadata {
                    write!(f, " {key}={value}")?;
                }
                Ok(())
            }
            EffectKind::CreateLock(lock) => {
                let target = lock.target.clone().unwrap_or_default();
                write!(
                    f,
                    "create lock from {}: name={:?} user={:?} login={:?} role={:?} ttl={}s message={:?}",
                    self.plugin,
                    lock.name,
                    target.user,
                    target.login,
                    target.role,
                    lock.ttl_seconds,
                    lock.message
                )
            }
            EffectKind::DeleteLock(lock) => {
                write!(f, "delete lock from {}: name={:?}", self.plugin, lock.name)
            }
        }
    }
}

/// How important a plugin's log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Level 0.
    Debug,
    /// Level 1 (also AssemblyScript's `trace`).
    Info,
    /// Level 2.
    Warn,
    /// Level 3 and above.
    Error,
}

impl LogLevel {
    /// The level for the ABI's numeric level.
    pub fn from_abi(level: i32) -> Self {
        match level {
            i32::MIN..=0 => Self::Debug,
            1 => Self::Info,
            2 => Self::Warn,
            _ => Self::Error,
        }
    }
}

/// One line a plugin logged during a call.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginLog {
    /// How important it is.
    pub level: LogLevel,
    /// The text, cut to the ABI's line limit.
    pub message: String,
}
