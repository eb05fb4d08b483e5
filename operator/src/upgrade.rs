//! A new sidecar image (an operator upgrade, or a new `sidecarImage`) reaches targets one at a
//! time: a target rolls to it only while no other target is rolling, and the next one starts once
//! its Deployment has rolled out with every pod Ready (or after `ROLLOUT_DEADLINE`, for a rollout
//! that never finishes). With `sidecarUpgrade: manual` a target keeps its image until its
//! Deployment is annotated `eventplug.dev/upgrade-sidecar: "true"`, then rolls as above.
//! Meanwhile its EventPlugins say `SidecarOutdated=True`, and the operator renders the config
//! `apiVersion` the older sidecars read.
//!
//! Plugin changes never wait for this: they reach the running sidecars through their config.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The annotation on a target Deployment that lets its sidecar roll to the operator's image
/// under `sidecarUpgrade: manual`.
pub const UPGRADE_ANNOTATION: &str = "eventplug.dev/upgrade-sidecar";

/// A rollout that has not finished after this long lets the next target start.
pub const ROLLOUT_DEADLINE: Duration = Duration::from_secs(600);

/// How a new sidecar image reaches the targets (setting `sidecarUpgrade`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SidecarUpgrade {
    /// One target at a time, each waiting for the one before to be rolled out and Ready.
    #[default]
    Paced,
    /// Only targets whose Deployment is annotated `eventplug.dev/upgrade-sidecar: "true"`, paced.
    Manual,
}

/// What a target's sidecar image is to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The image to render.
    pub image: String,
    /// Why the target keeps an older image, while it does (`SidecarOutdated`).
    pub outdated: Option<String>,
}

/// The one target rolling to a new image, since when, and whether its rollout failed.
#[derive(Debug, Default)]
pub struct Rollouts {
    rolling: Mutex<Option<Turn>>,
}

#[derive(Debug)]
struct Turn {
    key: String,
    since: Instant,
    failed: bool,
}

/// A target, as the pacing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `namespace/name`.
    pub key: &'a str,
    /// The image of the sidecar in its pod template, when injected.
    pub template_image: Option<&'a str>,
    /// Whether its Deployment has rolled out: every replica updated and Ready.
    pub rolled_out: bool,
    /// Whether it is annotated for an upgrade (`sidecarUpgrade: manual`).
    pub opted_in: bool,
    /// Whether its rollout failed (`ProgressDeadlineExceeded`): the next targets wait for a fix
    /// rather than receive an image that does not come up.
    pub failed: bool,
}

impl Rollouts {
    /// The image `target` gets when the operator's is `wanted`, claiming or releasing the rollout
    /// turn as it goes.
    pub fn choose(&self, target: Target<'_>, wanted: &str, mode: SidecarUpgrade) -> Choice {
        self.choose_at(target, wanted, mode, Instant::now())
    }

    fn choose_at(
        &self,
        target: Target<'_>,
        wanted: &str,
        mode: SidecarUpgrade,
        now: Instant,
    ) -> Choice {
        let mut rolling = self.rolling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(turn) = rolling.as_mut().filter(|t| t.key == target.key) {
            turn.failed = target.failed;
        }
        let mine = rolling.as_ref().is_some_and(|t| t.key == target.key);
        let current = Choice {
            image: wanted.to_string(),
            outdated: None,
        };
        let Some(old) = target.template_image.filter(|image| *image != wanted) else {
            // Not injected yet, or on the operator's image: done rolling once rolled out.
            if mine && target.rolled_out {
                *rolling = None;
            }
            return current;
        };
        if mode == SidecarUpgrade::Manual && !target.opted_in {
            return Choice {
                image: old.to_string(),
                outdated: Some(format!(
                    "the sidecar runs {old}, the operator's is {wanted}: annotate the Deployment {UPGRADE_ANNOTATION}=true to roll it (sidecarUpgrade: manual)"
                )),
            };
        }
        match rolling.as_ref() {
            Some(turn) if turn.key != target.key && turn.failed => Choice {
                image: old.to_string(),
                outdated: Some(format!(
                    "the sidecar runs {old}, the operator's is {wanted}: the upgrade is halted, the rollout of {} failed (fix the image or roll it back)",
                    turn.key
                )),
            },
            Some(turn)
                if turn.key != target.key && now.duration_since(turn.since) < ROLLOUT_DEADLINE =>
            {
                Choice {
                    image: old.to_string(),
                    outdated: Some(format!(
                        "the sidecar runs {old}, the operator's is {wanted}: waiting for {} to finish rolling (one target at a time)",
                        turn.key
                    )),
                }
            }
            _ => {
                if !mine {
                    *rolling = Some(Turn {
                        key: target.key.to_string(),
                        since: now,
                        failed: target.failed,
                    });
                }
                current
            }
        }
    }

    /// Gives the turn back when `key` holds it (the target was removed, or could not be
    /// patched): the next target need not wait out the deadline.
    pub fn release(&self, key: &str) {
        let mut rolling = self.rolling.lock().unwrap_or_else(|p| p.into_inner());
        if rolling.as_ref().is_some_and(|t| t.key == key) {
            *rolling = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(key: &'a str, image: Option<&'a str>, rolled_out: bool) -> Target<'a> {
        Target {
            key,
            template_image: image,
            rolled_out,
            opted_in: false,
            failed: false,
        }
    }

    #[test]
    fn targets_roll_one_at_a_time() {
        let rollouts = Rollouts::default();
        let paced = SidecarUpgrade::Paced;
        let start = Instant::now();
        // a takes the turn; b waits.
        let a = rollouts.choose_at(target("ns/a", Some("v1"), true), "v2", paced, start);
        assert_eq!(a.image, "v2");
        assert_eq!(a.outdated, None);
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, start);
        assert_eq!(b.image, "v1");
        assert!(
            b.outdated.as_deref().is_some_and(|m| m.contains("ns/a")),
            "{b:?}"
        );
        // a's template is on v2 but still rolling: b still waits.
        rollouts.choose_at(target("ns/a", Some("v2"), false), "v2", paced, start);
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, start);
        assert_eq!(b.image, "v1");
        // a rolled out: b's turn.
        rollouts.choose_at(target("ns/a", Some("v2"), true), "v2", paced, start);
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, start);
        assert_eq!(b.image, "v2");
        // A target not injected yet gets the operator's image at once, whoever rolls.
        let c = rollouts.choose_at(target("ns/c", None, false), "v2", paced, start);
        assert_eq!(
            c,
            Choice {
                image: "v2".into(),
                outdated: None
            }
        );
    }

    #[test]
    fn a_rollout_that_never_finishes_lets_the_next_one_start() {
        let rollouts = Rollouts::default();
        let paced = SidecarUpgrade::Paced;
        let start = Instant::now();
        rollouts.choose_at(target("ns/a", Some("v1"), false), "v2", paced, start);
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, start);
        assert_eq!(b.image, "v1");
        let later = start + ROLLOUT_DEADLINE;
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, later);
        assert_eq!(b.image, "v2");
    }

    #[test]
    fn a_failed_rollout_halts_the_upgrade_and_a_released_turn_passes_on() {
        let rollouts = Rollouts::default();
        let paced = SidecarUpgrade::Paced;
        let start = Instant::now();
        let mut a = target("ns/a", Some("v1"), false);
        rollouts.choose_at(a, "v2", paced, start);
        a.template_image = Some("v2");
        a.failed = true;
        rollouts.choose_at(a, "v2", paced, start);
        // Halted, even past the deadline.
        let b = rollouts.choose_at(
            target("ns/b", Some("v1"), true),
            "v2",
            paced,
            start + 2 * ROLLOUT_DEADLINE,
        );
        assert_eq!(b.image, "v1");
        assert!(
            b.outdated.as_deref().is_some_and(|m| m.contains("halted")),
            "{b:?}"
        );
        // a removed: its turn is given back.
        rollouts.release("ns/a");
        let b = rollouts.choose_at(target("ns/b", Some("v1"), true), "v2", paced, start);
        assert_eq!(b.image, "v2");
    }

    #[test]
    fn manual_upgrades_wait_for_the_annotation() {
        let rollouts = Rollouts::default();
        let manual = SidecarUpgrade::Manual;
        let kept = rollouts.choose(target("ns/a", Some("v1"), true), "v2", manual);
        assert_eq!(kept.image, "v1");
        assert!(
            kept.outdated
                .as_deref()
                .is_some_and(|m| m.contains(UPGRADE_ANNOTATION))
        );
        let mut opted = target("ns/a", Some("v1"), true);
        opted.opted_in = true;
        assert_eq!(rollouts.choose(opted, "v2", manual).image, "v2");
    }
}
