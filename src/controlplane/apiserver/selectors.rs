//! Label and field selectors (parsing and matching), as in apimachinery's `labels` and `fields`.
use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

/// Tokens of apimachinery's label selector lexer.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    Greater,
    Identifier,
    In,
    Less,
    NotEquals,
    NotIn,
    OpenPar,
    Error,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn symbol(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::Greater,
        "<" => Tok::Less,
        "!=" => Tok::NotEquals,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

/// apimachinery's `labels.Lexer`: the whole input as (token, literal) items, ending with End.
fn lex(input: &str) -> Vec<(Tok, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        if is_special(chars[i]) {
            // The longest run of special characters that is a known symbol.
            let mut buf = String::new();
            let mut last: Option<(Tok, String)> = None;
            while i < chars.len() && is_special(chars[i]) {
                buf.push(chars[i]);
                if let Some(t) = symbol(&buf) {
                    last = Some((t, buf.clone()));
                    i += 1;
                } else if last.is_some() {
                    break;
                } else {
                    i += 1;
                }
            }
            match last {
                Some(item) => out.push(item),
                None => {
                    out.push((Tok::Error, format!("error expected: keyword found '{buf}'")));
                    out.push((Tok::End, String::new()));
                    return out;
                }
            }
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let t = match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier,
            };
            out.push((t, word));
        }
    }
}

/// apimachinery's `labels.Parser` over the lexed items.
struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    /// The next item; in a values context the keywords `in`/`notin` are identifiers.
    fn peek(&self, values: bool) -> (Tok, String) {
        let (t, l) = self.items[self.pos.min(self.items.len() - 1)].clone();
        match t {
            Tok::In | Tok::NotIn if values => (Tok::Identifier, l),
            t => (t, l),
        }
    }
    fn next(&mut self, values: bool) -> (Tok, String) {
        let r = self.peek(values);
        self.pos += 1;
        r
    }

    fn parse(&mut self) -> Result<Vec<(String, LabelOp)>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.peek(true);
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, lit) = self.next(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(true);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<(String, LabelOp), String> {
        let (mut t, mut key) = self.next(true);
        let not = t == Tok::DoesNotExist;
        if not {
            (t, key) = self.next(true);
        }
        if t != Tok::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        key_error(&key)?;
        let (la, _) = self.peek(true);
        if not || la == Tok::End || la == Tok::Comma {
            return Ok((
                key,
                if not {
                    LabelOp::DoesNotExist
                } else {
                    LabelOp::Exists
                },
            ));
        }
        let (op, lit) = self.next(false);
        let value_err = |v: &str| -> Result<(), String> {
            let errs = super::object::label_value_errors(v);
            if errs.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "values[0][{key}]: Invalid value: {v:?}: {}",
                    errs.join("; ")
                ))
            }
        };
        match op {
            Tok::In | Tok::NotIn => {
                let set = self.values()?;
                for v in &set {
                    value_err(v)?;
                }
                Ok((
                    key.clone(),
                    if op == Tok::In {
                        LabelOp::In(set)
                    } else {
                        LabelOp::NotIn(set)
                    },
                ))
            }
            Tok::Equals | Tok::DoubleEquals | Tok::NotEquals | Tok::Greater | Tok::Less => {
                let v = self.exact_value()?;
                match op {
                    Tok::Greater | Tok::Less => {
                        let n: i64 = v.parse().map_err(|_| {
                            format!("values[0]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer")
                        })?;
                        Ok((key, if op == Tok::Greater { LabelOp::Gt(n) } else { LabelOp::Lt(n) }))
                    }
                    Tok::NotEquals => {
                        value_err(&v)?;
                        Ok((key, LabelOp::NotEq(v)))
                    }
                    _ => {
                        value_err(&v)?;
                        Ok((key, LabelOp::Eq(v)))
                    }
                }
            }
            _ => Err(format!(
                "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        }
    }

    fn exact_value(&mut self) -> Result<String, String> {
        let (t, _) = self.peek(true);
        if t == Tok::End || t == Tok::Comma {
            return Ok(String::new());
        }
        let (t, lit) = self.next(true);
        if t == Tok::Identifier {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.next(true);
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.peek(true);
        match t {
            Tok::Identifier | Tok::Comma => {
                let set = self.identifiers()?;
                let (t, _) = self.next(true);
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Tok::ClosedPar => {
                self.next(true);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut set: Vec<String> = Vec::new();
        let insert = |set: &mut Vec<String>, v: String| {
            if !set.contains(&v) {
                set.push(v);
            }
        };
        loop {
            let (t, lit) = self.next(true);
            match t {
                Tok::Identifier => {
                    insert(&mut set, lit);
                    let (t2, l2) = self.peek(true);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        insert(&mut set, String::new());
                    }
                    let (t2, _) = self.peek(true);
                    if t2 == Tok::ClosedPar {
                        insert(&mut set, String::new());
                        return Ok(set);
                    }
                    if t2 == Tok::Comma {
                        self.next(true);
                        insert(&mut set, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }
}

/// kube's validateLabelKey inside a selector (the field path is nil there, printed `<nil>`).
fn key_error(k: &str) -> Result<(), String> {
    let errs = super::object::qualified_name_errors(k);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("<nil>: Invalid value: {k:?}: {}", errs.join("; ")))
    }
}

impl LabelSelector {
    /// Parse like apimachinery's `labels.Parse`, with its error messages (answered as 400).
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut p = Parser {
            items: lex(s),
            pos: 0,
        };
        p.parse().map(LabelSelector).map_err(ApiError::bad_request)
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| match op {
            LabelOp::Eq(v) => get(k) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(k) != Some(v.as_str()),
            LabelOp::In(set) => get(k).is_some_and(|x| set.iter().any(|s| s == x)),
            LabelOp::NotIn(set) => get(k).is_none_or(|x| !set.iter().any(|s| s == x)),
            LabelOp::Exists => get(k).is_some(),
            LabelOp::DoesNotExist => get(k).is_none(),
            LabelOp::Gt(n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelOp::Lt(n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// A parsed field selector: (field, equal?, value) terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Fields each resource supports in field selectors (besides metadata.name/namespace).
fn supported_fields(plural: &str) -> &'static [&'static str] {
    match plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "nodes" => &["spec.unschedulable"],
        "namespaces" => &["status.phase"],
        "secrets" => &["type"],
        "services" => &["spec.clusterIP", "spec.type"],
        _ => &[],
    }
}

/// The string value of a selectable field ("" when unset, booleans as "true"/"false").
pub fn field_value(plural: &str, obj: &Value, field: &str) -> String {
    if plural == "events" && field == "source" {
        return obj
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let ptr = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if field == "spec.hostNetwork" || field == "spec.unschedulable" => "false".into(),
        _ => String::new(),
    }
}

/// Split `s` on `sep` not preceded by a backslash escape.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// fields.splitTerm: the first `!=`, `==` or `=` (in that order at each position).
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, eq) in [("!=", false), ("==", true), ("=", true)] {
            if rest.starts_with(op) {
                return Some((&term[..i], eq, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// fields.UnescapeValue: `\\`, `\,` and `\=` are escapes; a bare `,` or `=` is an error.
fn unescape_value(v: &str) -> Result<String, ApiError> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: invalid escape sequence: \\{e}"
                    )))
                }
                None => {
                    return Err(ApiError::bad_request(
                        "invalid field selector: unterminated escape sequence",
                    ))
                }
            },
            ',' | '=' => {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

impl FieldSelector {
    pub fn parse(s: &str, plural: &str, kind: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in split_unescaped(s, ',') {
            let Some((f, eq, v)) = split_term(part) else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let v = unescape_value(v)?;
            if f != "metadata.name"
                && f != "metadata.namespace"
                && !supported_fields(plural).contains(&f)
            {
                let _ = kind;
                return Err(ApiError::bad_request(if supported_fields(plural).is_empty() {
                    format!("{f:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")
                } else {
                    format!("field label not supported: {f}")
                }));
            }
            terms.push((f.to_string(), eq, v));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, plural: &str, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(f, eq, v)| (field_value(plural, obj, f) == *v) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_ops() {
        let p = pod(json!({"app": "web", "tier": "fe", "n": "5"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("missing notin (web)"));
        assert!(!m("missing in (web)"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!missing"));
        assert!(m("app=web,tier in (fe),!missing"));
        assert!(!m("app=web,tier=be"));
        assert!(m("n>3") && !m("n<3"));
        assert!(LabelSelector::parse("a=b,,c").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
        assert!(m("app in (web,)") && LabelSelector::parse("in=1,app").is_ok());
    }

    #[test]
    fn label_selector_errors_match_kube() {
        let e = |s: &str| {
            let e = LabelSelector::parse(s).unwrap_err();
            assert_eq!((e.code, e.reason), (400, "BadRequest"));
            e.message
        };
        assert_eq!(e("a==b==c"), "found '==', expected: ',' or 'end of string'");
        assert_eq!(e("a in (b"), "unable to parse requirement: found '', expected: ',' or ')'");
        assert_eq!(e("Bad_Key!/x=1"), "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(e("a,"), "found '', expected: identifier after ','");
        assert_eq!(e(",a"), "found ',', expected: !, identifier, or 'end of string'");
        assert_eq!(e("!"), "unable to parse requirement: found '', expected: identifier");
        assert_eq!(e("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(e("a b"), "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        assert_eq!(e("a=(b)"), "unable to parse requirement: found '(', expected: identifier");
        assert_eq!(e("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(e("a>x"), "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer");
        assert_eq!(e("a<"), "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer");
        assert!(e("-x").starts_with("unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist"));
        assert!(e("x/y/z").starts_with("unable to parse requirement: <nil>: Invalid value: \"x/y/z\": a valid label key"));
        assert!(e("a=-b").starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be"));
        for ok in ["Bad_Key", "a in ()", "a in (,)", "a notin (x,y),b", "a>1", "in", "in=1", "a=in", "a =  b", ""] {
            assert!(LabelSelector::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn field_selector_ops() {
        let p = pod(json!({}));
        let m = |s: &str| {
            FieldSelector::parse(s, "pods", "Pod")
                .unwrap()
                .matches("pods", &p)
        };
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName==n1,status.phase!=Failed"));
        assert!(!m("spec.nodeName="));
        assert!(m("metadata.name=p,metadata.namespace=ns"));
        assert!(m("spec.hostNetwork=false"));
        let unbound = json!({"metadata": {"name": "q"}, "spec": {}});
        assert!(FieldSelector::parse("spec.nodeName=", "pods", "Pod")
            .unwrap()
            .matches("pods", &unbound));
        let e = FieldSelector::parse("spec.foo=x", "pods", "Pod").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(FieldSelector::parse("spec.nodeName=x", "configmaps", "ConfigMap").is_err());
        let msg = |s: &str, plural: &str| FieldSelector::parse(s, plural, "").unwrap_err().message;
        assert_eq!(msg("a==b==c", "configmaps"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(msg("foo=bar", "configmaps"), r#""foo" is not a known field selector: only "metadata.name", "metadata.namespace""#);
        assert_eq!(msg("foo=bar", "pods"), "field label not supported: foo");
        assert_eq!(msg("metadata.name", "pods"), "invalid selector: 'metadata.name'; can't understand 'metadata.name'");
        let esc = FieldSelector::parse(r"metadata.name=a\,b", "pods", "Pod").unwrap();
        assert_eq!(esc.0[0].2, "a,b");
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "web"}, "source": {"component": "kubelet"}});
        let f = FieldSelector::parse(
            "involvedObject.name=web,involvedObject.kind=Pod,source=kubelet",
            "events",
            "Event",
        )
        .unwrap();
        assert!(f.matches("events", &ev));
    }
}
