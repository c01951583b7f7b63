//! Field paths inside a Kubernetes object, printed the way people write them in YAML
//! (`spec.template.spec.containers[0].resources`), whatever checker found the problem.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a JSON pointer (`/spec/containers/0`). Numeric segments become indexes: the
    /// objects checked here never use numbers as map keys where it would matter.
    pub fn from_pointer(pointer: &str) -> Self {
        Self(
            pointer
                .split('/')
                .skip(1)
                .map(|raw| {
                    let key = raw.replace("~1", "/").replace("~0", "~");
                    match key.parse() {
                        Ok(index) => Segment::Index(index),
                        Err(_) => Segment::Key(key),
                    }
                })
                .collect(),
        )
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(Segment::Key(key.into()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(whole object)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) if k.contains(['.', '/', ' ', '[']) || k.is_empty() => {
                    write!(f, "[{k:?}]")?
                }
                Segment::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_yaml_paths() {
        let path = FieldPath::from_pointer("/spec/template/spec/containers/0/resources");
        assert_eq!(
            path.to_string(),
            "spec.template.spec.containers[0].resources"
        );
        let labels = FieldPath::root()
            .key("metadata")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(
            labels.to_string(),
            "metadata.labels[\"app.kubernetes.io/name\"]"
        );
        assert_eq!(FieldPath::root().to_string(), "(whole object)");
    }

    #[test]
    fn unescapes_pointer_segments() {
        let path = FieldPath::from_pointer("/metadata/labels/app.kubernetes.io~1name");
        assert_eq!(
            path.segments().last(),
            Some(&Segment::Key("app.kubernetes.io/name".into()))
        );
    }
}
