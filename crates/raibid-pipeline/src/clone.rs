//! `clone:` as raibid writes it (`{ tags, submodules, lfs }`) and as Woodpecker files write
//! it: a clone step running woodpeckerci/plugin-git, whose settings say the same things
//! (`clone: { git: { image: woodpeckerci/plugin-git, settings: { tags: true } } }`, or in
//! Woodpecker 3's list form). The agent checks out with its own git, so only that plugin's
//! settings can be honoured: `tags`, `recursive` (submodules) and `lfs` are read; `depth` and
//! `partial`, which only make the plugin's own clone cheaper, have nothing to do here (the
//! agent fetches into a mirror cache and checks out the one commit); any other setting, or
//! another clone image, is refused rather than ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::pipeline::{CloneOptions, Fetch};

impl<'de> Deserialize<'de> for CloneOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CloneVisitor)
    }
}

struct CloneVisitor;

const OURS: &[&str] = &["tags", "submodules", "lfs"];

impl<'de> Visitor<'de> for CloneVisitor {
    type Value = CloneOptions;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "`{ tags, submodules, lfs }` (each true or false), or a Woodpecker clone step \
             running woodpeckerci/plugin-git",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CloneOptions, A::Error> {
        let mut options = CloneOptions::default();
        let mut ours = false;
        let mut step: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "tags" => options.tags = map.next_value::<bool>()?.into(),
                "submodules" => options.submodules = map.next_value::<bool>()?.into(),
                "lfs" => options.lfs = map.next_value::<bool>()?.into(),
                name => {
                    if let Some(first) = &step {
                        return Err(de::Error::custom(format!(
                            "clone steps {first:?} and {name:?}: the agent checks out once; \
                             keep one"
                        )));
                    }
                    let clone = map.next_value_seed(StepSeed { key: name })?;
                    options = clone.options(name).map_err(de::Error::custom)?;
                    step = Some(name.to_owned());
                    continue;
                }
            }
            ours = true;
        }
        if ours && let Some(name) = step {
            return Err(de::Error::custom(format!(
                "`clone` has both the clone step {name:?} and raibid's own keys ({}); keep one \
                 form",
                OURS.join(", ")
            )));
        }
        Ok(options)
    }

    /// Woodpecker 3's list of clone steps, each with its `name`.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CloneOptions, A::Error> {
        let Some(clone) = seq.next_element::<CloneStep>()? else {
            return Err(de::Error::custom(
                "an empty list of clone steps; remove `clone` to check out as usual",
            ));
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "more than one clone step: the agent checks out once; keep one",
            ));
        }
        let name = clone.name.clone().unwrap_or_else(|| "git".to_owned());
        clone.options(&name).map_err(de::Error::custom)
    }
}

/// The value of a key of `clone` that is none of raibid's own: a Woodpecker clone step, if it
/// is a mapping; otherwise a key `clone` does not have, said where the value is.
struct StepSeed<'a> {
    key: &'a str,
}

impl<'de> de::DeserializeSeed<'de> for StepSeed<'_> {
    type Value = CloneStep;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<CloneStep, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StepSeed<'_> {
    type Value = CloneStep;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a Woodpecker clone step (a mapping with `image`); `clone` has no key `{}`: it \
             takes {}",
            self.key,
            OURS.join(", ")
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CloneStep, A::Error> {
        CloneStep::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// One Woodpecker clone step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneStep {
    /// In the list form only; the mapping form names the step by its key.
    name: Option<String>,
    image: String,
    #[serde(default)]
    settings: BTreeMap<String, serde_yaml::Value>,
    /// Whether Woodpecker pulls the plugin's image: nothing to pull here.
    #[allow(dead_code)]
    pull: Option<bool>,
}

impl CloneStep {
    fn options(&self, name: &str) -> Result<CloneOptions, String> {
        if !is_plugin_git(&self.image) {
            return Err(format!(
                "clone step {name:?} runs {}: the agent checks out the commit with its own \
                 git and runs no clone image; of a clone step it reads woodpeckerci/plugin-git's \
                 settings (or write `clone: {{ tags, submodules, lfs }}`)",
                self.image
            ));
        }
        // What the settings leave out, the plugin does by default.
        let mut options = CloneOptions::WOODPECKER;
        for (key, value) in &self.settings {
            let flag = |what: &mut Fetch| -> Result<(), String> {
                *what = boolean(value)
                    .ok_or_else(|| {
                        format!("clone setting `{key}` is true or false, not {value:?}")
                    })?
                    .into();
                Ok(())
            };
            match key.to_ascii_lowercase().replace('-', "_").as_str() {
                "tags" => flag(&mut options.tags)?,
                "recursive" => flag(&mut options.submodules)?,
                "lfs" => flag(&mut options.lfs)?,
                // They make the plugin's own clone cheaper; the agent's mirror cache does that.
                "depth" | "partial" => {}
                _ => {
                    return Err(format!(
                        "clone setting `{key}` is not read: the agent checks out the commit with \
                         its own git, which takes `tags`, `recursive` (submodules) and `lfs` \
                         (`depth` and `partial` have nothing to do there)"
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// woodpeckerci/plugin-git from any registry (Docker Hub, quay.io, a mirror), any tag, or
/// Codeberg's woodpecker-plugins/git.
fn is_plugin_git(image: &str) -> bool {
    let repository = crate::image_repository(image);
    repository.ends_with("woodpeckerci/plugin-git")
        || repository.ends_with("woodpecker-plugins/git")
}

/// YAML's booleans, and the text Woodpecker's settings often hold them as.
fn boolean(value: &serde_yaml::Value) -> Option<bool> {
    match value {
        serde_yaml::Value::Bool(b) => Some(*b),
        serde_yaml::Value::String(s) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clone(yaml: &str) -> Result<CloneOptions, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn raibid_s_own_form_and_woodpecker_s_clone_steps_say_the_same() {
        let ours = CloneOptions {
            tags: Fetch::Yes,
            submodules: Fetch::Yes,
            lfs: Fetch::No,
        };
        assert_eq!(
            clone("{ tags: true, submodules: true, lfs: false }").unwrap(),
            ours
        );
        // What raibid's form leaves out it does not fetch.
        assert_eq!(clone("{ tags: true, submodules: true }").unwrap(), ours);
        assert_eq!(
            clone(
                "git:\n  image: woodpeckerci/plugin-git:2.6\n  settings:\n    depth: 50\n    \
                 tags: true\n    recursive: \"true\"\n    lfs: false\n"
            )
            .unwrap(),
            ours
        );
        assert_eq!(
            clone(
                "- name: clone\n  image: quay.io/woodpeckerci/plugin-git\n  settings:\n    \
                 tags: true\n    recursive: true\n    lfs: false\n    partial: false\n"
            )
            .unwrap(),
            ours
        );
        // What a clone step leaves out, the plugin does by default.
        assert_eq!(
            clone("git:\n  image: woodpeckerci/plugin-git\n").unwrap(),
            CloneOptions::WOODPECKER
        );
        assert_eq!(
            clone("git:\n  image: woodpeckerci/plugin-git\n  settings: { lfs: false }\n").unwrap(),
            CloneOptions {
                lfs: Fetch::No,
                ..CloneOptions::WOODPECKER
            }
        );
    }

    #[test]
    fn what_the_agent_cannot_honour_is_refused() {
        for (yaml, says) in [
            ("git:\n  image: alpine/git\n", "runs alpine/git"),
            (
                "git:\n  image: woodpeckerci/plugin-git\n  settings: { submodule_overrides: {} }\n",
                "clone setting `submodule_overrides` is not read",
            ),
            (
                "git:\n  image: woodpeckerci/plugin-git\n  settings: { tags: yes please }\n",
                "is true or false",
            ),
            (
                "tags: true\ngit:\n  image: woodpeckerci/plugin-git\n",
                "keep one form",
            ),
            (
                "a:\n  image: woodpeckerci/plugin-git\nb:\n  image: woodpeckerci/plugin-git\n",
                "keep one",
            ),
            ("[]", "an empty list of clone steps"),
            (
                "git:\n  image: woodpeckerci/plugin-git\n  commands: [x]\n",
                "unknown field `commands`",
            ),
            ("{ tags: 1 }", "invalid type"),
        ] {
            let err = clone(yaml).unwrap_err();
            assert!(err.contains(says), "{yaml:?}: {err}");
        }
    }
}
