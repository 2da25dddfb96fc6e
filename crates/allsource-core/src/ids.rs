//! The ids the store gives events that come without one: UUIDv7 (RFC 9562).
//!
//! Time-ordered ids keep the events appended together close together in the id index.
//! The store makes them in its sequencer, from the timestamp it assigns anyway, with a
//! counter for ids within one millisecond (RFC 9562, method 1) and random bits from a
//! generator seeded once from the OS: a few instructions per id instead of a clock
//! read and a locked context per id.

use allsource_core_types::Timestamp;
use uuid::{Builder, Uuid};

/// The largest value of the 12-bit counter field.
const COUNTER_MAX: u16 = 0x0FFF;

pub(crate) struct IdGenerator {
    last_millis: u64,
    counter: u16,
    random: u64,
}

impl IdGenerator {
    pub(crate) fn new() -> IdGenerator {
        let (high, low) = Uuid::new_v4().as_u64_pair();
        IdGenerator { last_millis: 0, counter: 0, random: (high ^ low.rotate_left(17)) | 1 }
    }

    /// The next id, for an event with `timestamp`. Ids from one generator increase.
    pub(crate) fn next(&mut self, timestamp: Timestamp) -> Uuid {
        let millis = u64::try_from(timestamp.as_micros() / 1000).unwrap_or(0);
        let random = self.next_random();
        if millis > self.last_millis {
            self.last_millis = millis;
            // Start low in the counter's range, leaving room for ids in this millisecond.
            self.counter = (random >> 54) as u16 & 0x01FF;
        } else if self.counter < COUNTER_MAX {
            self.counter += 1;
        } else {
            // More ids in one millisecond than the counter holds: borrow the next one.
            self.last_millis += 1;
            self.counter = 0;
        }
        let mut bytes = [0u8; 10];
        bytes[0..2].copy_from_slice(&self.counter.to_be_bytes());
        bytes[2..10].copy_from_slice(&random.to_be_bytes());
        Builder::from_unix_timestamp_millis(self.last_millis, &bytes).into_uuid()
    }

    /// xorshift64: fast, and good enough for the random tail of an id whose uniqueness
    /// comes from the time, the counter and a seed from the OS.
    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_increasing_and_carry_the_time() {
        let mut ids = IdGenerator::new();
        let t = Timestamp::from_micros(1_795_000_000_123_456);
        let mut previous = ids.next(t);
        assert_eq!(previous.get_version_num(), 7);
        assert_eq!(previous.get_variant(), uuid::Variant::RFC4122);
        let (seconds, nanos) = previous.get_timestamp().unwrap().to_unix();
        assert_eq!((seconds, nanos / 1_000_000), (1_795_000_000, 123));
        // Many ids in one millisecond, then time moving on: always increasing.
        for i in 0..20_000 {
            let next = ids.next(Timestamp::from_micros(t.as_micros() + i / 10_000 * 1000));
            assert!(next > previous, "id {i}");
            previous = next;
        }
        // A clock that goes back does not make ids go back.
        assert!(ids.next(Timestamp::from_micros(0)) > previous);
    }

    #[test]
    fn two_generators_do_not_collide() {
        let (mut a, mut b) = (IdGenerator::new(), IdGenerator::new());
        let t = Timestamp::from_micros(1_795_000_000_000_000);
        let from_a: std::collections::HashSet<Uuid> = (0..1000).map(|_| a.next(t)).collect();
        assert!((0..1000).all(|_| !from_a.contains(&b.next(t))));
    }
}
