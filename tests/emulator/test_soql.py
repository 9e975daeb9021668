"""The SOQL subset: parsing, evaluation against an org's records, Salesforce's errors."""

from __future__ import annotations

import pytest

from tokenkeep.clock import ManualClock
from tokenkeep.emulator.records import OrgRecords
from tokenkeep.emulator.soql import SoqlError, bind, parse


@pytest.fixture(scope="module")
def store() -> OrgRecords:
    records = OrgRecords("00D5g000004XXXXEAA", None, ManualClock())
    for name, employees, city in [
        ("Acme", 10, "Paris"),
        ("acme labs", 250, "Oslo"),
        ("Globex", None, "Paris"),
        ("It's 100% Hooli", 5000, None),
        ("Initech", 250, "Austin"),
    ]:
        records.create(
            "Account", {"Name": name, "NumberOfEmployees": employees, "BillingCity": city}
        )
    acme = next(r for r in records.rows("Account") if r["Name"] == "Acme")
    records.create("Contact", {"LastName": "Doe", "AccountId": acme["Id"], "Email": "d@x.io"})
    records.create("Contact", {"LastName": "Roe"})
    gone = records.create("Account", {"Name": "Deleted Co"})
    records.delete("Account", gone["Id"])
    return records


def names(store: OrgRecords, q: str, include_deleted: bool = False) -> list[str]:
    return [r["Name"] for r in bind(q, store).rows(include_deleted)]


def test_parse_builds_the_clauses() -> None:
    query = parse(
        "select Id, Name from Account where Name like 'a%' "
        "order by Name desc nulls last, Id limit 5 offset 2"
    )
    assert query.sobject == "Account"
    assert [f.path for f in query.fields] == ["Id", "Name"]
    assert query.where is not None
    assert query.where.kind == "like"
    assert [(ref.path, desc, nulls_first) for ref, desc, nulls_first in query.order] == [
        ("Name", True, False),
        ("Id", False, True),
    ]
    assert (query.limit, query.offset) == (5, 2)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Name = 'ACME'", ["Acme"]),  # text equality ignores case, as on Salesforce
        ("Name != 'Acme'", ["acme labs", "Globex", "It's 100% Hooli", "Initech"]),
        ("NumberOfEmployees > 10", ["acme labs", "It's 100% Hooli", "Initech"]),
        ("NumberOfEmployees <= 250 AND BillingCity = 'Paris'", ["Acme"]),
        ("NumberOfEmployees = null", ["Globex"]),
        (
            "BillingCity != null AND (NumberOfEmployees < 100 OR Name = 'Initech')",
            ["Acme", "Initech"],
        ),
        ("Name LIKE 'acme%'", ["Acme", "acme labs"]),
        ("Name LIKE '_cme'", ["Acme"]),
        ("Name LIKE '%100\\%%'", ["It's 100% Hooli"]),
        ("Name = 'It\\'s 100% Hooli'", ["It's 100% Hooli"]),
        ("BillingCity IN ('paris', 'Oslo')", ["Acme", "acme labs", "Globex"]),
        ("BillingCity NOT IN ('Paris')", ["acme labs", "It's 100% Hooli", "Initech"]),
        ("NOT Name LIKE 'a%'", ["Globex", "It's 100% Hooli", "Initech"]),
        ("CreatedDate >= 2026-01-01T00:00:00Z AND NumberOfEmployees >= 5000", ["It's 100% Hooli"]),
        ("IsDeleted = false AND NumberOfEmployees > 4999.5", ["It's 100% Hooli"]),
    ],
)
def test_where_filters_like_salesforce(store: OrgRecords, where: str, expected: list[str]) -> None:
    assert names(store, f"SELECT Name FROM Account WHERE {where}") == expected


def test_order_by_with_nulls_limit_and_offset(store: OrgRecords) -> None:
    q = "SELECT Name FROM Account ORDER BY NumberOfEmployees DESC NULLS FIRST, Name"
    assert names(store, q) == ["Globex", "It's 100% Hooli", "acme labs", "Initech", "Acme"]
    # Ascending puts nulls first by default; text order ignores case.
    assert names(store, "SELECT Name FROM Account ORDER BY NumberOfEmployees, Name LIMIT 3") == [
        "Globex",
        "Acme",
        "acme labs",
    ]
    assert names(store, "SELECT Name FROM Account ORDER BY Name LIMIT 2 OFFSET 1") == [
        "acme labs",
        "Globex",
    ]


def test_query_all_sees_deleted_records(store: OrgRecords) -> None:
    q = "SELECT Name, IsDeleted FROM Account WHERE IsDeleted = true"
    assert names(store, q) == []
    assert names(store, q, include_deleted=True) == ["Deleted Co"]


def test_projection_has_attributes_and_parent_fields(store: OrgRecords) -> None:
    bound = bind("SELECT LastName, Account.Name FROM Contact ORDER BY LastName", store)
    first, second = (bound.project(r, "60.0") for r in bound.rows())
    rid = first["attributes"]["url"].rsplit("/", 1)[1]
    assert first["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v60.0/sobjects/Contact/{rid}",
    }
    assert list(first) == ["attributes", "LastName", "Account"]
    assert first["Account"]["Name"] == "Acme"
    assert first["Account"]["attributes"]["type"] == "Account"
    assert second["Account"] is None
    filtered = bind("SELECT LastName FROM Contact WHERE Account.Name = 'acme'", store).rows()
    assert [r["LastName"] for r in filtered] == ["Doe"]


def test_field_names_are_case_insensitive_and_output_canonical(store: OrgRecords) -> None:
    bound = bind("select name, BILLINGCITY from ACCOUNT where name = 'acme'", store)
    (row,) = bound.rows()
    assert bound.project(row, "60.0")["BillingCity"] == "Paris"
    assert "Name" in bound.project(row, "60.0")


@pytest.mark.parametrize(
    ("q", "code", "reason"),
    [
        ("SELECT Id FROM", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
        ("SELECT FROM Account", "MALFORMED_QUERY", "unexpected token: 'FROM'"),
        ("SELECT Id FROM Account WHERE Name = ", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account LIMIT x", "MALFORMED_QUERY", "unexpected token: 'x'"),
        ("SELECT Id FROM Account WHERE Name 'x'", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id, Name, COUNT() FROM Account", "MALFORMED_QUERY", "Field must be grouped"),
        ("SELECT Id, id FROM Account", "MALFORMED_QUERY", "duplicate field selected: id"),
        (
            "SELECT Id FROM Account WHERE CreatedDate > 2026-13-45T00:00:00Z",
            "MALFORMED_QUERY",
            "invalid date/time",
        ),
        ("SELECT Id FROM Account OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "offset allowed"),
        ("SELECT Id FROM Foo", "INVALID_TYPE", "sObject type 'Foo' is not supported."),
        ("SELECT Foo FROM Account", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'."),
        ("SELECT Id FROM Account ORDER BY Bar", "INVALID_FIELD", "No such column 'Bar'"),
        ("SELECT Id FROM Contact WHERE Nope.Name = 'x'", "INVALID_FIELD", "relationship 'Nope'"),
        (
            "SELECT Id FROM Account WHERE NumberOfEmployees = '5'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type integer",
        ),
        (
            "SELECT Id FROM Account WHERE Name = 5",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type string",
        ),
    ],
)
def test_errors_carry_salesforce_code_and_position(
    store: OrgRecords, q: str, code: str, reason: str
) -> None:
    with pytest.raises(SoqlError) as info:
        bind(q, store).rows()
    assert info.value.error_code == code
    assert reason in info.value.message
    assert "ERROR at Row:1:Column:" in info.value.message


def test_error_caret_points_at_the_bad_column(store: OrgRecords) -> None:
    with pytest.raises(SoqlError) as info:
        bind("SELECT Foo FROM Account", store)
    assert info.value.message.startswith(
        "\nSELECT Foo FROM Account\n       ^\nERROR at Row:1:Column:8\n"
    )


def test_count_and_fields_macro(store: OrgRecords) -> None:
    assert parse("SELECT COUNT() FROM Account").count_only
    bound = bind("SELECT FIELDS(STANDARD) FROM Account LIMIT 1", store)
    projected = bound.project(bound.rows()[0], "60.0")
    assert {"Id", "Name", "BillingCity", "CreatedDate"} <= set(projected)


def test_relative_date_literals_follow_the_emulator_clock() -> None:
    clock = ManualClock()  # 2026-01-01T00:00:00Z
    store = OrgRecords("00D5g000004XXXXEAA", None, clock)
    store.create(
        "Opportunity", {"Name": "Old", "StageName": "Prospecting", "CloseDate": "2025-12-01"}
    )
    clock.advance(86_400 * 40)  # 2026-02-10
    store.create(
        "Opportunity", {"Name": "Now", "StageName": "Closed Won", "CloseDate": "2026-02-12"}
    )
    clock.advance(3600 * 5)

    def opps(where: str) -> list[str]:
        return [
            r["Name"] for r in bind(f"SELECT Name FROM Opportunity WHERE {where}", store).rows()
        ]

    assert opps("CreatedDate = TODAY") == ["Now"]
    assert opps("CreatedDate < TODAY") == ["Old"]
    assert opps("CreatedDate = LAST_N_DAYS:39") == ["Now"]
    assert opps("CreatedDate = LAST_N_DAYS:40") == ["Old", "Now"]
    assert opps("CloseDate = NEXT_N_DAYS:2") == ["Now"]
    assert opps("CloseDate = THIS_MONTH") == ["Now"]
    assert opps("CloseDate = LAST_YEAR") == ["Old"]
    assert opps("CloseDate >= THIS_YEAR") == ["Now"]
    assert opps("CloseDate != YESTERDAY AND IsClosed = true") == ["Now"]
    with pytest.raises(SoqlError) as info:
        bind("SELECT Id FROM Opportunity WHERE Name = TODAY", store)
    assert info.value.error_code == "INVALID_QUERY_FILTER_OPERATOR"
    with pytest.raises(SoqlError) as info:
        bind("SELECT Id FROM Opportunity WHERE CloseDate = LAST_N_DAYS", store)
    assert info.value.error_code == "MALFORMED_QUERY"


def test_parent_to_child_subquery(store: OrgRecords) -> None:
    bound = bind(
        "SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName DESC LIMIT 5) "
        "FROM Account WHERE Name LIKE 'acme%' ORDER BY Name",
        store,
    )
    acme, labs = (bound.project(r, "60.0") for r in bound.rows())
    assert acme["Name"] == "Acme"
    assert acme["Contacts"]["totalSize"] == 1
    assert acme["Contacts"]["done"] is True
    (doe,) = acme["Contacts"]["records"]
    assert doe["LastName"] == "Doe"
    assert doe["attributes"]["type"] == "Contact"
    assert labs["Contacts"] is None  # no children: null, as Salesforce answers
    with pytest.raises(SoqlError) as info:
        bind("SELECT Id, (SELECT Id FROM Nope) FROM Account", store)
    assert info.value.error_code == "INVALID_TYPE"
    assert "Didn't understand relationship 'Nope'" in info.value.message
    with pytest.raises(SoqlError) as info:
        bind("SELECT Id, (SELECT Id FROM Contacts FROM Account", store)
    assert info.value.error_code == "MALFORMED_QUERY"


def test_subquery_limit_applies_per_parent() -> None:
    records = OrgRecords("00D5g000004XXXXEAA", 2, ManualClock())
    bound = bind("SELECT Id, (SELECT Id FROM Contacts LIMIT 3) FROM Account", records)
    projected = [bound.project(r, "60.0") for r in bound.rows()]
    assert len(projected) == 30
    # Every seeded account has 85 contacts; each gets its own 3.
    assert all(p["Contacts"]["totalSize"] == 3 for p in projected)
    ids = {c["Id"] for p in projected for c in p["Contacts"]["records"]}
    assert len(ids) == 90


def test_multi_level_parent_fields(store: OrgRecords) -> None:
    bound = bind(
        "SELECT LastName, Account.Name, Account.Owner.Name FROM Contact "
        "WHERE Account.Owner.Name = 'emulator owner'",
        store,
    )
    (row,) = bound.rows()
    projected = bound.project(row, "60.0")
    assert projected["Account"]["Name"] == "Acme"
    assert projected["Account"]["Owner"]["Name"] == "Emulator Owner"
    assert projected["Account"]["Owner"]["attributes"]["type"] == "User"
    deep = "Parent." * 5
    bind(f"SELECT {deep}Name FROM Account", store)  # five levels: allowed
    with pytest.raises(SoqlError) as info:
        bind(f"SELECT Parent.{deep}Name FROM Account", store)
    assert info.value.error_code == "INVALID_FIELD"


def test_group_by_and_aggregate_functions(store: OrgRecords) -> None:
    bound = bind(
        "SELECT BillingCity, COUNT(Id) n, SUM(NumberOfEmployees), MAX(Name) FROM Account "
        "GROUP BY BillingCity ORDER BY COUNT(Id) DESC, BillingCity NULLS LAST",
        store,
    )
    assert bound.is_aggregate
    rows = [{k: v for k, v in r.items() if k != "attributes"} for r in bound.aggregate_records()]
    assert rows == [
        {"BillingCity": "Paris", "n": 2, "expr0": 10, "expr1": "Globex"},
        {"BillingCity": "Austin", "n": 1, "expr0": 250, "expr1": "Initech"},
        {"BillingCity": "Oslo", "n": 1, "expr0": 250, "expr1": "acme labs"},
        {"BillingCity": None, "n": 1, "expr0": 5000, "expr1": "It's 100% Hooli"},
    ]
    whole = bind("SELECT COUNT(Id), AVG(NumberOfEmployees) avg FROM Account", store)
    (one,) = whole.aggregate_records()
    assert one == {"attributes": {"type": "AggregateResult"}, "expr0": 5, "avg": 1377.5}


@pytest.mark.parametrize(
    ("q", "code", "reason"),
    [
        ("SELECT Name, COUNT(Id) FROM Account GROUP BY BillingCity", "MALFORMED_QUERY", "Name"),
        ("SELECT SUM(Name) FROM Account", "INVALID_FIELD", "aggregate operator SUM"),
        (
            "SELECT BillingCity FROM Account GROUP BY BillingCity ORDER BY Name",
            "MALFORMED_QUERY",
            "Ordered field must be grouped",
        ),
        ("SELECT Id FROM Account GROUP BY", "MALFORMED_QUERY", "unexpected token"),
    ],
)
def test_grouping_errors(store: OrgRecords, q: str, code: str, reason: str) -> None:
    with pytest.raises(SoqlError) as info:
        bind(q, store)
    assert info.value.error_code == code
    assert reason in info.value.message
