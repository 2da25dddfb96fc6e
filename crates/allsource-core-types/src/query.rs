//! Queries over the log: what a caller asks ([`QueryEventsRequest`]) and what passed
//! validation ([`Query`]).

use crate::limits::{QUERY_LIMIT_DEFAULT, QUERY_LIMIT_MAX};
use crate::{EntityId, Error, EventType, Position, Timestamp};

/// A query as a caller asks it; every filter is optional and they combine with AND.
///
/// ```
/// use allsource_core_types::{Query, QueryEventsRequest};
/// let request = QueryEventsRequest { entity_id: Some("user-123".into()), ..Default::default() };
/// let query = Query::try_from(request).unwrap();
/// assert_eq!(query.limit, 1000);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryEventsRequest {
    /// Only this entity's events.
    pub entity_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only events with `timestamp >= since`.
    pub since: Option<Timestamp>,
    /// Only events with `timestamp <= until`.
    pub until: Option<Timestamp>,
    /// The log as it was at this time: `timestamp <= as_of`.
    pub as_of: Option<Timestamp>,
    /// Only events with `position > after`: the paging cursor.
    pub after: Option<Position>,
    /// At most this many events, 1..=10,000; 1,000 when not given.
    pub limit: Option<usize>,
}

/// A validated query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Only this entity's events.
    pub entity_id: Option<EntityId>,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// `timestamp >= since`.
    pub since: Option<Timestamp>,
    /// `timestamp <= until`: the earlier of the request's `until` and `as_of`.
    pub until: Option<Timestamp>,
    /// `position > after`.
    pub after: Position,
    /// 1..=10,000.
    pub limit: usize,
}

impl TryFrom<QueryEventsRequest> for Query {
    type Error = Error;

    fn try_from(request: QueryEventsRequest) -> Result<Self, Error> {
        let limit = request.limit.unwrap_or(QUERY_LIMIT_DEFAULT);
        if !(1..=QUERY_LIMIT_MAX).contains(&limit) {
            return Err(Error::Validation(format!("limit must be 1..={QUERY_LIMIT_MAX}, got {limit}")));
        }
        let until = match (request.until, request.as_of) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Query {
            entity_id: request.entity_id.map(EntityId::try_from).transpose()?,
            event_type: request.event_type.map(EventType::try_from).transpose()?,
            since: request.since,
            until,
            after: request.after.unwrap_or(0),
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_bounds() {
        let ok = |r: QueryEventsRequest| Query::try_from(r).unwrap();
        let err = |r: QueryEventsRequest| Query::try_from(r).unwrap_err().code();
        assert_eq!(ok(QueryEventsRequest::default()).limit, QUERY_LIMIT_DEFAULT);
        assert_eq!(ok(QueryEventsRequest { limit: Some(10_000), ..Default::default() }).limit, 10_000);
        assert_eq!(err(QueryEventsRequest { limit: Some(0), ..Default::default() }), "ValidationError");
        assert_eq!(err(QueryEventsRequest { limit: Some(10_001), ..Default::default() }), "ValidationError");
        assert_eq!(
            err(QueryEventsRequest { entity_id: Some(String::new()), ..Default::default() }),
            "ValidationError"
        );
        let (t1, t2) = (Timestamp::from_micros(1), Timestamp::from_micros(2));
        let q = ok(QueryEventsRequest { until: Some(t2), as_of: Some(t1), ..Default::default() });
        assert_eq!(q.until, Some(t1));
        let q = ok(QueryEventsRequest { until: Some(t1), as_of: Some(t2), ..Default::default() });
        assert_eq!(q.until, Some(t1));
        let q = ok(QueryEventsRequest { as_of: Some(t2), ..Default::default() });
        assert_eq!(q.until, Some(t2));
    }
}
