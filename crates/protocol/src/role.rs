//! The peers' roles and their default static ports.

/// A peer role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The blocker holding data objects.
    Blockerb,
    /// The blocker holding maps and locks.
    Blockerm,
    /// The mapper.
    Mapperd,
    /// The volume composer.
    Vlmcd,
    /// The NBD endpoint.
    Nbdd,
}

/// First dynamic port: tools and clients bind from here on (the default
/// segment has 32 static ports).
pub const CLIENT_PORTS_START: u32 = 32;

impl Role {
    /// Every role, in start order (blockers first, endpoints last).
    pub const ALL: [Role; 5] = [
        Role::Blockerb,
        Role::Blockerm,
        Role::Mapperd,
        Role::Vlmcd,
        Role::Nbdd,
    ];

    /// The role's static port unless configured otherwise.
    pub fn default_port(self) -> u32 {
        match self {
            Role::Blockerb => 1,
            Role::Blockerm => 2,
            Role::Mapperd => 3,
            Role::Vlmcd => 4,
            Role::Nbdd => 5,
        }
    }

    /// Name as in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Blockerb => "blockerb",
            Role::Blockerm => "blockerm",
            Role::Mapperd => "mapperd",
            Role::Vlmcd => "vlmcd",
            Role::Nbdd => "nbdd",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_distinct_static_ports() {
        let mut ports: Vec<u32> = Role::ALL.iter().map(|r| r.default_port()).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), Role::ALL.len());
        assert!(ports.iter().all(|&p| p > 0 && p < CLIENT_PORTS_START));
    }
}
