//! Route path patterns: `/search`, `/items/{id}`, `/files/{*rest}`.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// Matches the rest of the path (one or more segments); only last.
    Rest(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(src: &str) -> Result<PathPattern, String> {
        let rest = src
            .strip_prefix('/')
            .ok_or_else(|| format!("path `{src}` must start with /"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                if let Some(name) = inner.strip_prefix('*') {
                    if i + 1 != parts.len() {
                        return Err(format!(
                            "path `{src}`: {{*{name}}} must be the last segment"
                        ));
                    }
                    Segment::Rest(check_name(src, name)?)
                } else {
                    Segment::Param(check_name(src, inner)?)
                }
            } else if part.is_empty() || *part == "." || *part == ".." || part.contains(['{', '}'])
            {
                return Err(format!("path `{src}`: segment `{part}` is not allowed"));
            } else {
                Segment::Literal((*part).to_string())
            };
            segments.push(seg);
        }
        Ok(PathPattern {
            source: src.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a decoded, canonical path; returns the path parameters.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = BTreeMap::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let v = parts.get(i).filter(|v| !v.is_empty())?;
                    params.insert(name.clone(), (*v).to_string());
                }
                Segment::Rest(name) => {
                    if i >= parts.len() {
                        return None;
                    }
                    params.insert(name.clone(), parts[i..].join("/"));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }
}

fn check_name(src: &str, name: &str) -> Result<String, String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(name.to_string())
    } else {
        Err(format!(
            "path `{src}`: parameter name `{name}` must be letters, digits or _"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_param_and_rest() {
        let p = PathPattern::parse("/search").unwrap();
        assert!(p.matches("/search").is_some());
        assert!(p.matches("/search/").is_none());
        assert!(p.matches("/searches").is_none());
        let p = PathPattern::parse("/items/{id}/price").unwrap();
        assert_eq!(p.matches("/items/42/price").unwrap()["id"], "42");
        assert!(p.matches("/items//price").is_none());
        let p = PathPattern::parse("/files/{*rest}").unwrap();
        assert_eq!(p.matches("/files/a/b.txt").unwrap()["rest"], "a/b.txt");
        assert!(p.matches("/files").is_none());
        assert!(PathPattern::parse("/").unwrap().matches("/").is_some());
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(
            PathPattern::parse("search")
                .unwrap_err()
                .contains("must start with /")
        );
        assert!(
            PathPattern::parse("/a/{*r}/b")
                .unwrap_err()
                .contains("last segment")
        );
        assert!(
            PathPattern::parse("/a/../b")
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            PathPattern::parse("/a/{x-y}")
                .unwrap_err()
                .contains("parameter name")
        );
    }
}
