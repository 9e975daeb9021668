"""The emulator's sObject store: Salesforce-shaped ids, deterministic seed data, CRUD rules."""

from __future__ import annotations

import pytest

from tokenkeep.clock import ManualClock
from tokenkeep.emulator.records import (
    SEED_ACCOUNTS,
    SEED_CONTACTS,
    OrgRecords,
    RecordError,
    id15_to_18,
    is_valid_id,
    make_id,
)

ORG = "00D5g000004XXXXEAA"


def test_id15_to_18_matches_salesforce_checksum() -> None:
    # Known pairs from Salesforce documentation and real orgs.
    assert id15_to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert id15_to_18("003000000000000") == "003000000000000AAA"


def test_made_ids_have_key_prefix_and_valid_suffix() -> None:
    rid = make_id("006", 123_456)
    assert len(rid) == 18
    assert rid.startswith("006")
    assert is_valid_id(rid)
    assert is_valid_id(rid[:15])
    assert not is_valid_id(rid[:17] + ("A" if rid[17] != "A" else "B"))


def test_same_seed_gives_same_records_and_other_seed_differs() -> None:
    clock = ManualClock()
    first = OrgRecords(ORG, 7, clock)
    again = OrgRecords(ORG, 7, clock)
    other = OrgRecords(ORG, 8, clock)
    rows = list(first.rows("Contact"))
    assert rows == list(again.rows("Contact"))
    assert list(first.rows("Account")) == list(again.rows("Account"))
    assert rows != list(other.rows("Contact"))
    assert first.count("Account") == SEED_ACCOUNTS
    # More than one 2000-row query batch, so pagination is exercised by plain queries.
    assert first.count("Contact") == SEED_CONTACTS > 2000
    contact = rows[0]
    assert contact["Id"].startswith("003")
    assert is_valid_id(contact["Id"])
    assert first.get("Account", contact["AccountId"]) is not None
    assert contact["Name"] == f"{contact['FirstName']} {contact['LastName']}"


def test_no_seed_means_an_empty_org() -> None:
    store = OrgRecords(ORG, None, ManualClock())
    assert store.count("Account") == 0
    assert store.count("Contact") == 0


def test_create_fills_system_fields_and_derives_name() -> None:
    clock = ManualClock()
    store = OrgRecords(ORG, None, clock)
    record = store.create("Contact", {"FirstName": "Ada", "lastname": "Lovelace"})
    assert record["Id"].startswith("003")
    assert record["Name"] == "Ada Lovelace"
    assert record["IsDeleted"] is False
    assert record["CreatedDate"] == "2026-01-01T00:00:00.000+0000"
    clock.advance(61.5)
    store.update("Contact", record["Id"][:15], {"LastName": "King"})
    again = store.get("Contact", record["Id"])
    assert again is not None
    assert again["Name"] == "Ada King"
    assert again["LastModifiedDate"] == "2026-01-01T00:01:01.500+0000"


@pytest.mark.parametrize(
    ("sobject", "values", "code", "fields"),
    [
        ("Account", {"Industry": "Energy"}, "REQUIRED_FIELD_MISSING", ["Name"]),
        ("Contact", {"FirstName": "X"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        ("Account", {"Name": "A", "Foo": 1}, "INVALID_FIELD", None),
        (
            "Account",
            {"Name": "A", "CreatedDate": "x"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["CreatedDate"],
        ),
        ("Account", {"Name": "A", "NumberOfEmployees": True}, "JSON_PARSER_ERROR", None),
        ("Contact", {"LastName": "A", "AccountId": "nope"}, "MALFORMED_ID", ["AccountId"]),
    ],
)
def test_create_is_validated_like_salesforce(
    sobject: str, values: dict[str, object], code: str, fields: list[str] | None
) -> None:
    store = OrgRecords(ORG, None, ManualClock())
    with pytest.raises(RecordError) as info:
        store.create(sobject, values)
    assert info.value.error_code == code
    assert info.value.status == 400
    assert info.value.fields == fields
    assert store.count(sobject) == 0


def test_delete_moves_to_recycle_bin_and_rollback_restores_everything() -> None:
    store = OrgRecords(ORG, 1, ManualClock())
    victim = dict(next(iter(store.rows("Account"))))
    vid = victim["Id"]
    store.begin()
    created = store.create("Account", {"Name": "Temp"})
    store.update("Account", vid, {"Name": "Renamed"})
    store.delete("Account", vid)
    assert store.get("Account", vid) is None
    deleted = [r for r in store.rows("Account", include_deleted=True) if r["IsDeleted"]]
    assert [r["Id"] for r in deleted] == [vid]
    store.rollback()
    restored = store.get("Account", vid)
    assert restored is not None
    assert restored["Name"] == victim["Name"]
    assert restored["IsDeleted"] is False
    assert store.get("Account", created["Id"]) is None
    assert store.count("Account") == SEED_ACCOUNTS
    with pytest.raises(RecordError) as info:
        store.delete("Account", "001000000000000AAA")
    assert info.value.error_code == "NOT_FOUND"
    assert info.value.status == 404
