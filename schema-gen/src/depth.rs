//! The depth limit of GraphQL documents, checked on the parsed document before it runs,
//! over HTTP and WebSocket alike.
//!
//! `max_depth` bounds the nesting of data selections. Introspection (`__schema`,
//! `__type`) is left out of that count: the introspection query that GraphiQL, Apollo
//! and the code generators send is 15 levels deep, nearly all of it `ofType`. It is
//! bounded instead the way graphql-js's `MaxIntrospectionDepthRule` bounds it: at most
//! three nested `fields`, `inputFields`, `interfaces` or `possibleTypes`, the fields
//! through which the cyclic type graph multiplies the size of a response.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Nested list fields an introspection selection may have on one path.
pub const MAX_INTROSPECTION_LISTS: usize = 3;
const INTROSPECTION_LISTS: [&str; 4] = ["fields", "inputFields", "interfaces", "possibleTypes"];
/// Fragments spread inside each other deeper than this are refused outright.
const MAX_FRAGMENT_NESTING: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Data,
    Introspection,
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    /// Heights of fragments already measured: a fragment spread many times is walked once.
    memo: HashMap<(&'a str, Mode), usize>,
    spreading: Vec<&'a str>,
    introspection_too_deep: bool,
    fragments_too_deep: bool,
}

impl<'a> Walk<'a> {
    /// In data mode the deepest field nesting of `set`; in introspection mode the most
    /// introspection list fields on one path.
    fn height(&mut self, set: &'a SelectionSet, mode: Mode) -> usize {
        let mut max = 0;
        for item in &set.items {
            let h = match &item.node {
                Selection::Field(f) => {
                    let name = f.node.name.node.as_str();
                    let sub = &f.node.selection_set.node;
                    match mode {
                        Mode::Data if name == "__schema" || name == "__type" => {
                            if self.height(sub, Mode::Introspection) > MAX_INTROSPECTION_LISTS {
                                self.introspection_too_deep = true;
                            }
                            1
                        }
                        Mode::Data => 1 + self.height(sub, Mode::Data),
                        Mode::Introspection => {
                            usize::from(INTROSPECTION_LISTS.contains(&name)) + self.height(sub, Mode::Introspection)
                        }
                    }
                }
                Selection::InlineFragment(f) => self.height(&f.node.selection_set.node, mode),
                Selection::FragmentSpread(s) => self.fragment(s.node.fragment_name.node.as_str(), mode),
            };
            max = max.max(h);
        }
        max
    }

    fn fragment(&mut self, name: &'a str, mode: Mode) -> usize {
        if let Some(&h) = self.memo.get(&(name, mode)) {
            return h;
        }
        // an unknown fragment or a cycle counts nothing here: validation rejects both
        let Some(def) = self.doc.fragments.get(name) else {
            return 0;
        };
        if self.spreading.contains(&name) {
            return 0;
        }
        if self.spreading.len() >= MAX_FRAGMENT_NESTING {
            self.fragments_too_deep = true;
            return 0;
        }
        self.spreading.push(name);
        let h = self.height(&def.node.selection_set.node, mode);
        self.spreading.pop();
        self.memo.insert((name, mode), h);
        h
    }
}

/// Checks every operation of `doc`; the error is the message for `QUERY_TOO_DEEP`.
pub fn check_depth(doc: &ExecutableDocument, max_depth: usize) -> Result<(), String> {
    let mut walk = Walk {
        doc,
        memo: HashMap::new(),
        spreading: Vec::new(),
        introspection_too_deep: false,
        fragments_too_deep: false,
    };
    for (_, op) in doc.operations.iter() {
        let depth = walk.height(&op.node.selection_set.node, Mode::Data);
        if depth > max_depth {
            return Err(format!(
                "the query is nested {depth} levels deep; at most {max_depth} are allowed"
            ));
        }
    }
    if walk.introspection_too_deep {
        return Err(format!(
            "introspection nests more than {MAX_INTROSPECTION_LISTS} of fields, inputFields, interfaces \
             and possibleTypes"
        ));
    }
    if walk.fragments_too_deep {
        return Err(format!(
            "fragments are spread more than {MAX_FRAGMENT_NESTING} levels deep"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn check(query: &str, max: usize) -> Result<(), String> {
        check_depth(&parse_query(query).expect("parses"), max)
    }

    #[test]
    fn data_depth_counts_fields_through_fragments() {
        assert!(check("{ a { b { c } } }", 3).is_ok());
        let err = check("{ a { b { c { d } } } }", 3).unwrap_err();
        assert!(err.contains("4 levels"), "{err}");
        let via_fragments = "query { a { ...F } } fragment F on T { b { ... on T { c { d } } } }";
        assert!(check(via_fragments, 3).is_err());
        assert!(check(via_fragments, 4).is_ok());
        // every operation of the document is checked
        assert!(check("query A { a } query B { a { b { c { d } } } }", 3).is_err());
    }

    #[test]
    fn the_standard_introspection_query_passes_and_cycles_do_not() {
        // the shape of graphql-js's getIntrospectionQuery(): 15 levels, 2 nested lists
        let standard = "query IntrospectionQuery { __schema { queryType { name } types { ...FullType } } }
            fragment FullType on __Type { kind name fields(includeDeprecated: true) { name args { ...InputValue }
              type { ...TypeRef } } inputFields { ...InputValue } interfaces { ...TypeRef }
              possibleTypes { ...TypeRef } }
            fragment InputValue on __InputValue { name type { ...TypeRef } }
            fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name
              ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
              ofType { kind name } } } } } } } } } }";
        assert_eq!(check(standard, 5), Ok(()));
        let cyclic =
            "{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }";
        assert!(check(cyclic, 12).unwrap_err().contains("introspection"));
        let via_type =
            "{ __type(name: \"T\") { fields { type { interfaces { possibleTypes { inputFields { name } } } } } } }";
        assert!(check(via_type, 12).is_err());
    }

    #[test]
    fn fragment_cycles_and_fan_out_stay_cheap() {
        assert!(check("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }", 3).is_ok());
        // each fragment spreads the next twice: 2^40 paths, walked once each
        let mut doc = String::from("{ ...F0 } ");
        for i in 0..40 {
            doc.push_str(&format!(
                "fragment F{i} on Q {{ a: x {{ ...F{n} }} b: x {{ ...F{n} }} }} ",
                n = i + 1
            ));
        }
        doc.push_str("fragment F40 on Q { y }");
        assert!(check(&doc, 100).is_ok());
        assert!(check(&doc, 10).is_err());
        let mut chain = String::from("{ ...F0 } ");
        for i in 0..100 {
            chain.push_str(&format!("fragment F{i} on Q {{ ...F{} }} ", i + 1));
        }
        chain.push_str("fragment F100 on Q { y }");
        assert!(check(&chain, 12).unwrap_err().contains("fragments"));
    }
}
