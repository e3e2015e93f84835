//! Who a suggested rule names: callers grouped by the most specific stable
//! attribute their audit lines carry.
//!
//! - a service token: its `client_id` (`clients`), else its subject;
//! - a workload: its SPIFFE ID (`workloads`);
//! - people: one group when two or more of them did the same thing and every one
//!   of them holds that group (the group fewest observed people of the route hold,
//!   so the rule widens to as few others as possible); otherwise their subjects.
//!
//! One person alone is named by subject: a group would grant the whole group
//! what one member was seen doing.

use std::collections::{BTreeMap, BTreeSet};

/// The kind of caller, which decides the rule condition that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallerKind {
    /// A service token with a client id: `clients`.
    Client,
    /// A SPIFFE ID: `workloads`.
    Workload,
    /// A person: `groups` or `subjects`.
    User,
    /// A service token without a client id: `subjects`.
    Subject,
}

/// One observed caller of a route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: CallerKind,
    pub id: String,
    /// Index into the route's issuers of the token's issuer (`None` for a
    /// workload, which no provider vouches for).
    pub issuer: Option<u16>,
    /// Groups held on every request seen (a person's groups can change between
    /// tokens; only the stable ones count). Sorted. Empty for non-users.
    pub groups: Vec<String>,
}

impl Caller {
    /// Narrows the stable groups to those also present on this request.
    pub fn observe_groups(&mut self, seen: impl Fn(&str) -> bool) {
        self.groups.retain(|g| seen(g));
    }
}

/// What a rule names its callers by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Principal {
    Clients(Vec<String>),
    Workloads(Vec<String>),
    Group(String),
    Subjects(Vec<String>),
}

impl Principal {
    /// The rule condition's key.
    pub fn condition(&self) -> &'static str {
        match self {
            Principal::Clients(_) => "clients",
            Principal::Workloads(_) => "workloads",
            Principal::Group(_) => "groups",
            Principal::Subjects(_) => "subjects",
        }
    }

    /// The condition's values.
    pub fn values(&self) -> Vec<&str> {
        match self {
            Principal::Clients(v) | Principal::Workloads(v) | Principal::Subjects(v) => {
                v.iter().map(String::as_str).collect()
            }
            Principal::Group(g) => vec![g.as_str()],
        }
    }
}

/// Splits a set of callers (indexes into `callers`) into the principals that name
/// them, each with the callers it stands for.
pub fn principals(
    set: &[u32],
    callers: &[Caller],
    holders: &BTreeMap<&str, usize>,
) -> Vec<(Principal, Vec<u32>)> {
    let mut by_kind: BTreeMap<CallerKind, Vec<u32>> = BTreeMap::new();
    for &i in set {
        if let Some(c) = callers.get(i as usize) {
            by_kind.entry(c.kind).or_default().push(i);
        }
    }
    let ids = |members: &[u32]| -> Vec<String> {
        let ids: BTreeSet<&str> = members
            .iter()
            .filter_map(|&i| callers.get(i as usize))
            .map(|c| c.id.as_str())
            .collect();
        ids.into_iter().map(str::to_string).collect()
    };
    let mut out = Vec::new();
    for (kind, members) in by_kind {
        let principal = match kind {
            CallerKind::Client => Principal::Clients(ids(&members)),
            CallerKind::Workload => Principal::Workloads(ids(&members)),
            CallerKind::Subject => Principal::Subjects(ids(&members)),
            CallerKind::User => match shared_group(&members, callers, holders) {
                Some(g) => Principal::Group(g),
                None => Principal::Subjects(ids(&members)),
            },
        };
        out.push((principal, members));
    }
    out
}

/// The group every one of `members` (two or more people) holds, the one held by
/// the fewest observed people of the route; ties by name.
fn shared_group(
    members: &[u32],
    callers: &[Caller],
    holders: &BTreeMap<&str, usize>,
) -> Option<String> {
    if members.len() < 2 {
        return None;
    }
    let mut people = members.iter().filter_map(|&i| callers.get(i as usize));
    let first = people.next()?;
    let mut common: Vec<&str> = first.groups.iter().map(String::as_str).collect();
    for person in people {
        common.retain(|g| {
            person
                .groups
                .binary_search_by(|h| h.as_str().cmp(g))
                .is_ok()
        });
    }
    common
        .into_iter()
        .min_by_key(|g| (holders.get(g).copied().unwrap_or(usize::MAX), *g))
        .map(str::to_string)
}

/// How many of the route's observed people hold each group.
pub fn group_holders(callers: &[Caller]) -> BTreeMap<&str, usize> {
    let mut holders = BTreeMap::new();
    for c in callers.iter().filter(|c| c.kind == CallerKind::User) {
        for g in &c.groups {
            *holders.entry(g.as_str()).or_insert(0) += 1;
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, groups: &[&str]) -> Caller {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.sort();
        Caller {
            kind: CallerKind::User,
            id: id.into(),
            issuer: Some(0),
            groups,
        }
    }

    fn other(kind: CallerKind, id: &str) -> Caller {
        Caller {
            kind,
            id: id.into(),
            issuer: Some(0),
            groups: Vec::new(),
        }
    }

    fn people() -> Vec<Caller> {
        vec![
            user("alice", &["eng", "staff", "oncall"]),
            user("bob", &["eng", "staff"]),
            user("carol", &["staff", "sales"]),
            user("dave", &["eng", "staff", "oncall"]),
            other(CallerKind::Client, "billing"),
            other(CallerKind::Client, "reports"),
            other(CallerKind::Workload, "spiffe://td/ns/shop/sa/cart"),
            other(CallerKind::Subject, "cron"),
        ]
    }

    fn group_of(set: &[u32]) -> Vec<(Principal, Vec<u32>)> {
        let callers = people();
        let holders = group_holders(&callers);
        principals(set, &callers, &holders)
    }

    #[test]
    fn people_who_share_a_group_are_named_by_the_most_specific_one() {
        // alice and dave share eng, staff and oncall; oncall has the fewest holders.
        assert_eq!(
            group_of(&[0, 3]),
            [(Principal::Group("oncall".into()), vec![0, 3])]
        );
        // alice, bob, dave: eng (3 holders) beats staff (4).
        assert_eq!(group_of(&[0, 1, 3])[0].0, Principal::Group("eng".into()));
        // Everyone: only staff is shared.
        assert_eq!(
            group_of(&[0, 1, 2, 3])[0].0,
            Principal::Group("staff".into())
        );
    }

    #[test]
    fn people_without_a_common_group_or_alone_are_named_by_subject() {
        let callers = vec![user("alice", &["eng"]), user("erin", &["sales"])];
        let holders = group_holders(&callers);
        assert_eq!(
            principals(&[0, 1], &callers, &holders)[0].0,
            Principal::Subjects(vec!["alice".into(), "erin".into()])
        );
        assert_eq!(group_of(&[1])[0].0, Principal::Subjects(vec!["bob".into()]));
    }

    #[test]
    fn machines_are_named_by_client_id_or_spiffe_id_never_by_group() {
        let got = group_of(&[4, 5, 6, 7, 1]);
        let names: Vec<(&str, Vec<&str>)> = got
            .iter()
            .map(|(p, _)| (p.condition(), p.values()))
            .collect();
        assert_eq!(
            names,
            [
                ("clients", vec!["billing", "reports"]),
                ("workloads", vec!["spiffe://td/ns/shop/sa/cart"]),
                ("subjects", vec!["bob"]),
                ("subjects", vec!["cron"]),
            ]
        );
    }

    #[test]
    fn only_groups_held_on_every_request_count() {
        let mut alice = user("alice", &["eng", "oncall"]);
        alice.observe_groups(|g| g == "eng");
        assert_eq!(alice.groups, ["eng"]);
    }
}
