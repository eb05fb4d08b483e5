//! Fixture files: `fixtures/<id>-<name>.json`, each one audit event as event-handler posts it (flat
//! JSON), or the 2022 prototype's wrapper `{name, type, description, data}`, converted on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The file it came from.
    pub path: PathBuf,
    /// The event's flat JSON.
    pub json: Vec<u8>,
}

/// The fixtures of a plugin project, by id.
#[derive(Debug, Clone, Default)]
pub struct FixtureSet {
    by_id: BTreeMap<i32, Fixture>,
}

/// The id of a fixture file name (`12-failed-login.json` → 12).
pub fn fixture_id(file_name: &str) -> Option<i32> {
    let stem = file_name.strip_suffix(".json")?;
    let (id, name) = stem.split_once('-')?;
    (!name.is_empty()).then_some(())?;
    id.parse().ok().filter(|id| *id > 0)
}

impl FixtureSet {
    /// Reads every fixture in `dir`. A missing folder is an empty set; a file that is not JSON, not
    /// an object, or a second file with the same id is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let mut set = Self::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => {
                return Err(format!(
                    "cannot read the fixtures folder {}: {e}",
                    dir.display()
                ));
            }
        };
        for entry in entries {
            let path = entry
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(fixture_id)
            else {
                continue;
            };
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
            let json = flat_event(&bytes)
                .map_err(|e| format!("fixture {id} ({}): {e}", path.display()))?;
            if let Some(other) = set.by_id.insert(
                id,
                Fixture {
                    path: path.clone(),
                    json,
                },
            ) {
                return Err(format!(
                    "fixtures {} and {} share the id {id}; give each file its own number",
                    other.path.display(),
                    path.display()
                ));
            }
        }
        Ok(set)
    }

    /// The fixture with `id`.
    pub fn get(&self, id: i32) -> Option<&Fixture> {
        self.by_id.get(&id)
    }

    /// The ids present, in order.
    pub fn ids(&self) -> Vec<i32> {
        self.by_id.keys().copied().collect()
    }

    /// The next free id (one past the largest).
    pub fn next_id(&self) -> i32 {
        self.by_id.keys().next_back().map_or(1, |id| id + 1)
    }
}

/// The flat event JSON of a fixture file's bytes: as they are when flat, converted when they use the
/// prototype's wrapper.
fn flat_event(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("not a JSON object: a fixture is one audit event".into());
    };
    let is_wrapper = !object.contains_key("event")
        && object.get("data").is_some_and(serde_json::Value::is_object)
        && object.get("type").is_some_and(serde_json::Value::is_string);
    if !is_wrapper {
        return Ok(bytes.to_vec());
    }
    super::prototype::convert_wrapper(object)
}

#[cfg(test)]
mod tests {
    use super::{FixtureSet, fixture_id};
    use std::path::PathBuf;

    fn folder(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "eventplug-fixtures-{}-{}",
            std::process::id(),
            files.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn a_folder_loads_flat_and_prototype_fixtures_by_id() {
        let dir = folder(&[
            ("1-flat.json", r#"{"event":"user.login","uid":"a"}"#),
            (
                "2-old.json",
                r#"{"name":"old","type":"user.login","description":"","data":{"Metadata":{"Type":"user.login","ID":"b"},"User":{"User":"alice"}}}"#,
            ),
            ("notes.txt", "not a fixture"),
        ]);
        let set = FixtureSet::load(&dir).expect("loads");
        assert_eq!(set.ids(), [1, 2]);
        assert_eq!(set.next_id(), 3);
        assert_eq!(
            set.get(1).expect("1").json,
            br#"{"event":"user.login","uid":"a"}"#
        );
        let converted: serde_json::Value =
            serde_json::from_slice(&set.get(2).expect("2").json).expect("JSON");
        assert_eq!(
            converted,
            serde_json::json!({"event": "user.login", "uid": "b", "user": "alice"})
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn duplicate_ids_and_bad_files_are_named() {
        let dir = folder(&[
            ("1-a.json", "{}"),
            ("1-b.json", "{}"),
            ("3-c.json", "[]"),
            ("4-d.json", "{}"),
        ]);
        let err = FixtureSet::load(&dir).unwrap_err();
        assert!(
            err.contains("share the id 1") || err.contains("3-c.json"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
        assert!(
            FixtureSet::load(std::path::Path::new("/nonexistent/fixtures"))
                .expect("missing is empty")
                .ids()
                .is_empty()
        );
    }

    #[test]
    fn ids_come_from_the_file_name() {
        assert_eq!(fixture_id("1-login.json"), Some(1));
        assert_eq!(fixture_id("12-failed-login.json"), Some(12));
        assert_eq!(fixture_id("login.json"), None);
        assert_eq!(fixture_id("0-x.json"), None);
        assert_eq!(fixture_id("3-.json"), None);
        assert_eq!(fixture_id("3-x.txt"), None);
    }
}
