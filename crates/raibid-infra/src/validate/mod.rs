//! Offline validation of rendered manifests: published schemas, strict typed conversion, the
//! house rules, and agreement with the raibid configuration. Every problem names the file, the
//! object and the field, so the fix is one edit away.

pub(crate) mod argo;
mod consistency;
mod rules;
pub(crate) mod schema;
pub(crate) mod typed;

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use raibid_config::Config;

use crate::kinds::{self, KINDS, Schema};
use crate::manifest::{Manifest, ObjectRef};
use crate::path::FieldPath;

pub use consistency::{CONFIG_MAP, pools};
use schema::Schemas;

/// One problem in one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Issue {
    /// File below `infra/` the object came from.
    pub source: String,
    pub object: ObjectRef,
    pub path: FieldPath,
    pub message: String,
}

impl Issue {
    pub fn new(manifest: &Manifest, path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            source: manifest.source.clone(),
            object: manifest.object_ref(),
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.source, self.object, self.path, self.message
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationReport {
    pub objects: usize,
    pub issues: Vec<Issue>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.issues.is_empty()
    }

    /// `Ok(self)` when nothing is wrong, else the report as an error.
    pub fn into_result(self) -> Result<Self, crate::InfraError> {
        if self.is_ok() {
            Ok(self)
        } else {
            Err(crate::InfraError::Invalid(self))
        }
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.issues.is_empty() {
            return write!(f, "{} objects valid", self.objects);
        }
        write!(
            f,
            "{} problem(s) in {} objects:",
            self.issues.len(),
            self.objects
        )?;
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

/// Validates rendered objects; `config` is the configuration they must agree with (stream
/// and group names, pools).
pub fn validate(objects: &[Manifest], config: &Config) -> ValidationReport {
    let mut report = validate_structure(objects);
    report.issues.extend(consistency::check(objects, config));
    report.issues.sort();
    report.issues.dedup();
    report
}

/// Schemas, typed conversion and house rules only: what is wrong with the objects whatever the
/// configuration (used on manifests as written, before the configuration overwrites fields).
pub fn validate_structure(objects: &[Manifest]) -> ValidationReport {
    let schemas = Schemas::shared();
    let mut issues = Vec::new();
    let mut seen = BTreeSet::new();
    for manifest in objects {
        if !seen.insert(manifest.object_ref()) {
            issues.push(Issue::new(
                manifest,
                FieldPath::root(),
                "defined twice in the same set of objects",
            ));
        }
        issues.extend(check_object(schemas, manifest));
    }
    issues.extend(rules::check(objects));
    issues.sort();
    issues.dedup();
    ValidationReport {
        objects: objects.len(),
        issues,
    }
}

fn check_object(schemas: &Schemas, manifest: &Manifest) -> Vec<Issue> {
    let Some(info) = kinds::lookup(manifest.api_version(), manifest.kind()) else {
        let known: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        return vec![Issue::new(
            manifest,
            FieldPath::root().key("kind"),
            format!(
                "{} {} is not a kind raibid can validate (known: {})",
                manifest.api_version(),
                manifest.kind(),
                known.join(", ")
            ),
        )];
    };
    let mut findings = Vec::new();
    if let Some(typed) = info.typed {
        findings.extend(typed(&manifest.object));
    } else {
        // Custom resources: the CRD schemas say only `metadata: object`, so check it as the
        // API server will.
        findings.extend(
            typed::check::<ObjectMeta>(&manifest.object["metadata"])
                .into_iter()
                .map(|(path, message)| (prefix("metadata", path), message)),
        );
    }
    let version = manifest
        .api_version()
        .rsplit('/')
        .next()
        .unwrap_or_default();
    // The typed conversion and the schema often see the same mistake; one report per field.
    let typed_paths: BTreeSet<FieldPath> = findings.iter().map(|(p, _)| p.clone()).collect();
    let mut schema_findings = Vec::new();
    match &info.schema {
        Schema::Core(document, name) => {
            schema_findings.extend(schemas.check_core(*document, name, &manifest.object));
        }
        Schema::Crd(crd) => match schemas.check_crd(*crd, version, &manifest.object) {
            Some(found) => schema_findings.extend(found),
            None => schema_findings.push((
                FieldPath::root().key("apiVersion"),
                format!("the CRD does not serve version {version}"),
            )),
        },
        Schema::Structure(check) => schema_findings.extend(check(&manifest.object)),
        Schema::TypedOnly => {}
    }
    findings.extend(
        schema_findings
            .into_iter()
            .filter(|(path, _)| !typed_paths.contains(path)),
    );
    findings
        .into_iter()
        .map(|(path, message)| Issue::new(manifest, path, message))
        .collect()
}

fn prefix(key: &str, path: FieldPath) -> FieldPath {
    path.segments()
        .iter()
        .fold(FieldPath::root().key(key), |acc, segment| match segment {
            crate::path::Segment::Key(k) => acc.key(k.clone()),
            crate::path::Segment::Index(i) => acc.index(*i),
        })
}
