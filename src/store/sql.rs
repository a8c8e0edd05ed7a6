//! SQL shared by the SQLite and PostgreSQL stores: the schema's columns and the `WHERE` clause
//! a [`Selector`] turns into. Placeholders are numbered (`?1` for SQLite, `$1` for PostgreSQL).

use super::Selector;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    /// Integer.
    Int(i64),
    /// Text.
    Text(String),
}

/// The columns read back into a [`super::DeadLetter`], in this order.
pub(crate) const COLUMNS: &str = "id, event_id, source, route, topic, record_key_text, class, \
    message, attempts, first_failed_at, last_failed_at, status, replay_count, resolution, \
    event_json, record_key, record_value";

/// Builds `WHERE …` for a selector; `sigil` is `?` or `$`. Parameters are appended to `params`.
pub(crate) fn where_clause(sel: &Selector, sigil: char, params: &mut Vec<Param>) -> String {
    let mut clauses: Vec<String> = Vec::new();
    let bind = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        format!("{sigil}{}", params.len())
    };
    if !sel.ids.is_empty() {
        let list: Vec<String> = sel
            .ids
            .iter()
            .map(|id| bind(Param::Int(*id), params))
            .collect();
        clauses.push(format!("id IN ({})", list.join(", ")));
    }
    if let Some(r) = &sel.route {
        let p = bind(Param::Text(r.clone()), params);
        clauses.push(format!("route = {p}"));
    }
    if let Some(s) = &sel.source {
        let p = bind(Param::Text(s.clone()), params);
        clauses.push(format!("source = {p}"));
    }
    if let Some(c) = &sel.class {
        let p = bind(Param::Text(c.clone()), params);
        clauses.push(format!("class = {p}"));
    }
    if !sel.statuses.is_empty() {
        let list: Vec<String> = sel
            .statuses
            .iter()
            .map(|s| bind(Param::Text(s.as_str().to_string()), params))
            .collect();
        clauses.push(format!("status IN ({})", list.join(", ")));
    }
    if let Some(id) = sel.after_id {
        let p = bind(Param::Int(id), params);
        clauses.push(format!("id > {p}"));
    }
    if let Some(t) = sel.since {
        let p = bind(Param::Int(t), params);
        clauses.push(format!("last_failed_at >= {p}"));
    }
    if let Some(t) = sel.until {
        let p = bind(Param::Int(t), params);
        clauses.push(format!("last_failed_at < {p}"));
    }
    if clauses.is_empty() {
        "WHERE TRUE".to_string()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// `LIMIT n` when the selector has one.
pub(crate) fn limit_clause(sel: &Selector) -> String {
    sel.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Status;

    #[test]
    fn selectors_become_numbered_parameters() {
        let sel = Selector {
            ids: vec![4, 5],
            class: Some("schema".into()),
            statuses: vec![Status::Pending],
            ..Selector::default()
        };
        let mut params = Vec::new();
        let w = where_clause(&sel, '$', &mut params);
        assert_eq!(w, "WHERE id IN ($1, $2) AND class = $3 AND status IN ($4)");
        assert_eq!(params.len(), 4);
        assert_eq!(
            where_clause(&Selector::default(), '?', &mut Vec::new()),
            "WHERE TRUE"
        );
    }
}
