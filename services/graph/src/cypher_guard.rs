//! Spotting write clauses in user Cypher, so non-admins only read through
//! `graph.cypher`. The Neo4j backend also runs their queries in a transaction that is
//! always rolled back, so a write that slips past this check is undone.

/// Words that start a writing clause.
const WRITE_WORDS: [&str; 8] = [
    "CREATE", "MERGE", "DELETE", "DETACH", "SET", "REMOVE", "DROP", "FOREACH",
];

/// Procedure namespaces that administer or write.
const WRITE_PROCEDURES: [&str; 4] = ["DBMS.", "APOC.", "DB.CREATE", "GDS."];

/// Parts of procedure names that suggest a write anywhere else (`db.index.fulltext.
/// createNodeIndex`, `db.clearQueryCaches`); refusing a harmless one is acceptable.
const WRITE_VERBS: [&str; 7] = [
    "CREATE", "DROP", "DELETE", "SET", "MERGE", "REMOVE", "CLEAR",
];

/// The first write clause in `query`, ignoring string literals, comments, escaped
/// identifiers and property names; `None` when the query only reads.
pub fn write_clause(query: &str) -> Option<String> {
    let words = words(query);
    for (i, (word, after_dot)) in words.iter().enumerate() {
        if *after_dot {
            continue;
        }
        if WRITE_WORDS.contains(&word.as_str()) {
            return Some(word.clone());
        }
        if word == "LOAD" && words.get(i + 1).is_some_and(|(w, _)| w == "CSV") {
            return Some("LOAD CSV".into());
        }
        if word == "CALL" {
            let procedure: String = words[i + 1..]
                .iter()
                .take_while(|(w, _)| w != "(" && w != "YIELD")
                .map(|(w, _)| w.as_str())
                .collect();
            if WRITE_PROCEDURES.iter().any(|p| procedure.starts_with(p))
                || WRITE_VERBS.iter().any(|v| procedure.contains(v))
            {
                return Some(format!("CALL {}", procedure.to_lowercase()));
            }
        }
    }
    None
}

/// Upper-cased words and punctuation of `query`, each marked when it follows a `.`
/// (a property or procedure name part); literals and comments removed.
fn words(query: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let mut chars = query.chars().peekable();
    let mut after_dot = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' => {
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if d == '\\' {
                        escaped = true;
                    } else if d == c {
                        break;
                    }
                }
                out.push(("_".into(), after_dot));
                after_dot = false;
            }
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for d in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = c.to_uppercase().to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        word.extend(d.to_uppercase());
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((word, after_dot));
                after_dot = false;
            }
            '.' => {
                out.push((".".into(), after_dot));
                after_dot = true;
            }
            c if c.is_whitespace() => {}
            c => {
                out.push((c.to_string(), false));
                after_dot = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::write_clause;

    #[test]
    fn reads_pass_and_writes_are_named() {
        for read in [
            "MATCH (d:Dt) RETURN d.id",
            "MATCH (d:Dt {id: 'CREATE'}) WHERE d.set = 1 RETURN d // DELETE",
            "MATCH (n) /* SET */ RETURN n.`merge`",
            "CALL db.labels() YIELD label RETURN label",
        ] {
            assert_eq!(write_clause(read), None, "{read}");
        }
        for (write, clause) in [
            ("create (n:X)", "CREATE"),
            ("MATCH (n) SET n.x = 1", "SET"),
            ("MATCH (n) DETACH DELETE n", "DETACH"),
            ("LOAD CSV FROM 'x' AS l RETURN l", "LOAD CSV"),
            (
                "CALL dbms.security.createUser('a','b')",
                "CALL dbms.security.createuser",
            ),
            ("CALL apoc.create.node(['X'], {})", "CALL apoc.create.node"),
            ("MATCH (n) REMOVE n.x", "REMOVE"),
            (
                "CALL db.index.fulltext.createNodeIndex('i', ['Dt'], ['id'])",
                "CALL db.index.fulltext.createnodeindex",
            ),
            ("DROP CONSTRAINT c", "DROP"),
        ] {
            assert_eq!(write_clause(write).as_deref(), Some(clause), "{write}");
        }
    }
}
