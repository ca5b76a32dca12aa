//! Path templates mapping input files to representation keys, e.g.
//! `{run}/seed{seed}/step{step}/{layer}.npy`.
//!
//! A template is matched against a file's path relative to the ingest source, component by
//! component. Placeholders: `{run}` (or `{model}`), `{seed}` and `{step}` (digits only),
//! `{layer}`, `{*}` (matches and ignores), and any other `{name}`, which becomes a tag. A
//! placeholder matches at least one character and never a `/`. The template's extension, if
//! `.npy`, `.npz` or `.safetensors`, restricts which files match; without one, every supported
//! file matches (its extension removed before matching).

use std::collections::BTreeMap;

use crate::StorageError;
use crate::sources::FileKind;

/// The documented default: the layout of `fixtures/digits`.
pub const DEFAULT_PATTERN: &str = "{run}/seed{seed}/step{step}/{layer}";

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(String),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    text: String,
    components: Vec<Vec<Tok>>,
    ext: Option<FileKind>,
}

/// What a path matched.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Captures {
    pub run: Option<String>,
    pub seed: Option<u64>,
    pub step: Option<u64>,
    pub layer: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, StorageError> {
        let bad = |reason: String| StorageError::InvalidPattern {
            pattern: text.to_string(),
            reason,
        };
        let mut body = text.trim_start_matches("./").to_string();
        let mut ext = None;
        for (suffix, kind) in [
            (".npy", FileKind::Npy),
            (".npz", FileKind::Npz),
            (".safetensors", FileKind::Safetensors),
        ] {
            if let Some(stripped) = body.strip_suffix(suffix) {
                body = stripped.to_string();
                ext = Some(kind);
                break;
            }
        }
        if body.is_empty() || body.starts_with('/') {
            return Err(bad("must be a non-empty relative path template".into()));
        }
        let mut components = Vec::new();
        let mut names = std::collections::HashSet::new();
        for comp in body.split('/') {
            if comp.is_empty() {
                return Err(bad("empty path component".into()));
            }
            let mut toks = Vec::new();
            let mut rest = comp;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('{') {
                    let end = after
                        .find('}')
                        .ok_or_else(|| bad(format!("unclosed '{{' in '{comp}'")))?;
                    let name = &after[..end];
                    let name = if name == "model" { "run" } else { name };
                    if name.is_empty()
                        || !(name == "*"
                            || name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    {
                        return Err(bad(format!("bad placeholder '{{{name}}}'")));
                    }
                    if matches!(toks.last(), Some(Tok::Var(_))) {
                        return Err(bad(format!(
                            "two placeholders without text between them in '{comp}'"
                        )));
                    }
                    if name != "*" && !names.insert(name.to_string()) {
                        return Err(bad(format!("placeholder {{{name}}} appears twice")));
                    }
                    toks.push(Tok::Var(name.to_string()));
                    rest = &after[end + 1..];
                } else {
                    let end = rest.find('{').unwrap_or(rest.len());
                    if rest[..end].contains('}') {
                        return Err(bad(format!("stray '}}' in '{comp}'")));
                    }
                    toks.push(Tok::Lit(rest[..end].to_string()));
                    rest = &rest[end..];
                }
            }
            components.push(toks);
        }
        if ext == Some(FileKind::Npy) && !names.contains("layer") {
            return Err(bad("a .npy template needs a {layer} placeholder".into()));
        }
        Ok(Template {
            text: text.to_string(),
            components,
            ext,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Matches a relative path (`/`-separated, with extension). `None` if it does not match.
    pub fn matches(&self, relative: &str, kind: FileKind) -> Option<Captures> {
        if self.ext.is_some_and(|e| e != kind) {
            return None;
        }
        let stem = relative
            .rsplit_once('.')
            .map(|(s, _)| s)
            .unwrap_or(relative);
        let parts: Vec<&str> = stem.split('/').collect();
        if parts.len() != self.components.len() {
            return None;
        }
        let mut vars = Vec::new();
        for (toks, part) in self.components.iter().zip(&parts) {
            if !match_component(toks, part, &mut vars) {
                return None;
            }
        }
        let mut caps = Captures::default();
        for (name, value) in vars {
            match name.as_str() {
                "*" => {}
                "run" => caps.run = Some(value),
                "seed" => caps.seed = Some(value.parse().ok()?),
                "step" => caps.step = Some(value.parse().ok()?),
                "layer" => caps.layer = Some(value),
                _ => {
                    caps.tags.insert(name, value);
                }
            }
        }
        Some(caps)
    }
}

fn match_component(toks: &[Tok], s: &str, vars: &mut Vec<(String, String)>) -> bool {
    match toks.first() {
        None => s.is_empty(),
        Some(Tok::Lit(l)) => s
            .strip_prefix(l.as_str())
            .is_some_and(|rest| match_component(&toks[1..], rest, vars)),
        Some(Tok::Var(name)) => {
            let digits_only = name == "seed" || name == "step";
            // Shortest first, so `{layer}_{*}` splits at the first `_` that lets the rest match.
            for (end, c) in s
                .char_indices()
                .skip(1)
                .map(|(i, c)| (i, Some(c)))
                .chain([(s.len(), None)])
            {
                let value = &s[..end];
                if digits_only && !value.bytes().all(|b| b.is_ascii_digit()) {
                    break;
                }
                let mark = vars.len();
                vars.push((name.clone(), value.to_string()));
                if match_component(&toks[1..], &s[end..], vars) {
                    return true;
                }
                vars.truncate(mark);
                let _ = c;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_layout() {
        let t = Template::parse("{run}/seed{seed}/step{step}/{layer}.npy").unwrap();
        let c = t
            .matches("mlp/seed0/step2250/h1.npy", FileKind::Npy)
            .unwrap();
        assert_eq!(
            (c.run.as_deref(), c.seed, c.step, c.layer.as_deref()),
            (Some("mlp"), Some(0), Some(2250), Some("h1"))
        );
        assert!(t.matches("probe_y.npy", FileKind::Npy).is_none());
        assert!(
            t.matches("mlp/seed0/step2250/params.npz", FileKind::Npz)
                .is_none()
        );
        assert!(
            t.matches("mlp/seedX/step2250/h1.npy", FileKind::Npy)
                .is_none()
        );
        let any = Template::parse(DEFAULT_PATTERN).unwrap();
        assert!(
            any.matches("mlp/seed0/step5/acts.npz", FileKind::Npz)
                .is_some()
        );
    }

    #[test]
    fn tags_wildcards_and_backtracking() {
        let t = Template::parse("{model}_{lr}/{*}/ckpt-{step}.safetensors").unwrap();
        let c = t
            .matches(
                "resnet_0.1/whatever/ckpt-0300.safetensors",
                FileKind::Safetensors,
            )
            .unwrap();
        assert_eq!(c.run.as_deref(), Some("resnet"));
        assert_eq!(c.tags["lr"], "0.1");
        assert_eq!(c.step, Some(300));
        let t = Template::parse("{run}/{layer}_act.npy").unwrap();
        let c = t.matches("m/block_1_act.npy", FileKind::Npy).unwrap();
        assert_eq!(c.layer.as_deref(), Some("block_1"));
    }

    #[test]
    fn bad_templates() {
        for t in [
            "",
            "/abs/{layer}.npy",
            "{run}{layer}.npy",
            "{run}/{run}/{layer}",
            "{ru n}/{layer}",
            "{run}.npy",
            "{run}/{layer",
        ] {
            assert!(Template::parse(t).is_err(), "{t}");
        }
    }
}
