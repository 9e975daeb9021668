"""The emulator's per-org sObject store: Salesforce-style ids, seed data, validated CRUD.

The schema (fields and describe metadata) lives in :mod:`tokenkeep.emulator.sobjects`.

Everything lives in plain dicts so a data call is a few lookups. Field and object names are
case-insensitive on Salesforce (``account``, ``ACCOUNT`` and ``Account`` are one object);
the store keeps canonical spellings and resolves any casing through lower-case maps.

Values are kept as JSON-ready Python values, the way the REST API returns them: strings,
ints, floats, bools, ``None``; dates as ``YYYY-MM-DD`` and date-times as
``2026-01-01T00:00:00.000+0000`` (so string order is time order).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.emulator.sobjects import (
    ACCOUNT_TYPES,
    INDUSTRIES,
    LEAD_SOURCES,
    SCHEMAS,
    SCHEMAS_BY_PREFIX,
    FieldSpec,
    SObjectSchema,
    schema_named,
)

__all__ = [
    "SCHEMAS",
    "FieldSpec",
    "OrgRecords",
    "RecordError",
    "SObjectSchema",
    "format_datetime",
    "id15_to_18",
    "is_valid_id",
    "make_id",
]

Record = dict[str, Any]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHECKSUM_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
# The "pod" characters real ids carry after the key prefix (instance-specific).
_POD = "5g0"
# Upper-case letters map to "1", everything else to "0" (for the checksum bits).
_UPPER_BITS = str.maketrans({c: ("1" if c.isupper() else "0") for c in _BASE62})


def id15_to_18(id15: str) -> str:
    """Append Salesforce's 3-character case-safe suffix to a 15-character id.

    Each 5-character chunk yields one suffix character: bit *i* is set when the chunk's
    character *i* is an upper-case letter, and the 5-bit value indexes ``A..Z0..5``.
    """
    bits = id15.translate(_UPPER_BITS)
    return (
        id15
        + _CHECKSUM_CHARS[int(bits[4::-1], 2)]
        + _CHECKSUM_CHARS[int(bits[9:4:-1], 2)]
        + _CHECKSUM_CHARS[int(bits[14:9:-1], 2)]
    )


def make_id(key_prefix: str, counter: int) -> str:
    """An 18-character id: key prefix, pod, a base-62 counter, checksum suffix."""
    digits = ""
    n = counter
    for _ in range(9):
        n, r = divmod(n, 62)
        digits = _BASE62[r] + digits
    return id15_to_18(key_prefix + _POD + digits)


def is_valid_id(value: str) -> bool:
    """True for a well-formed 15- or 18-character id (18: with a matching suffix)."""
    if len(value) == 15:
        return value.isalnum()
    if len(value) == 18:
        return value.isalnum() and id15_to_18(value[:15]) == value
    return False


def format_datetime(epoch_seconds: float) -> str:
    """Salesforce's REST date-time format: ``2026-01-01T00:00:00.000+0000``."""
    return utc_from_timestamp(epoch_seconds).isoformat(timespec="milliseconds")[:-6] + "+0000"


class RecordError(Exception):
    """A Salesforce-shaped failure of a store operation (rendered as an error array)."""

    def __init__(
        self, status: int, error_code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def to_json(self) -> dict[str, Any]:
        """One element of a Salesforce error array."""
        body: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            body["fields"] = self.fields
        return body


def not_found() -> RecordError:
    """404 NOT_FOUND as Salesforce words it."""
    return RecordError(404, "NOT_FOUND", "The requested resource does not exist")


_FIRST = ("Ann", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gia", "Hugo", "Ines", "Jon", "Kira")
_LAST = ("Smith", "Ng", "Okafor", "Silva", "Kowalski", "Haddad", "Larsen", "Moreau", "Tanaka")
_COMPANY = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka")
_SUFFIX = ("Corp", "Inc", "Ltd", "GmbH", "Group", "Labs")
_CITIES = ("Paris", "Austin", "Lagos", "Osaka", "Lima", "Oslo", "Pune", "Quebec")
_TITLES = ("CEO", "CTO", "VP Sales", "Engineer", "Analyst", "Buyer", None)

# Enough contacts that a plain query spans two 2000-row batches.
SEED_ACCOUNTS = 30
SEED_CONTACTS = 2_550


@dataclass(slots=True)
class _Undo:
    sobject: str
    record_id: str
    before: Record | None  # None: the record did not exist (undo = remove)
    was_deleted: bool


class OrgRecords:
    """All sObject records of one emulated org.

    ``seed`` given: the org starts with deterministic Accounts and Contacts (the same seed
    gives the same ids and values). ``seed`` None: the org starts empty.
    """

    def __init__(self, org_id: str, seed: int | None, clock: Clock) -> None:
        self.org_id = org_id
        self.clock = clock
        # The user seed data belongs to; writes are stamped with the calling user instead
        # (see act_as), as on Salesforce.
        self.owner_id = make_id("005", 10**15)  # far from any id the core hands out
        self.acting_user = self.owner_id
        self._live: dict[str, dict[str, Record]] = {name: {} for name in SCHEMAS}
        self._deleted: dict[str, dict[str, Record]] = {name: {} for name in SCHEMAS}
        self._counters: dict[str, int] = {}
        self._journal: list[_Undo] | None = None
        # Query cursors and bulk jobs live with the org (see rest.py / bulk.py).
        self.cursors: dict[str, Any] = {}
        self.ingest_jobs: dict[str, Any] = {}
        self._add_user(self.owner_id, "emulator.owner@example.com", "Emulator Owner")
        if seed is not None:
            self._seed(seed)

    def act_as(self, user_id: str, username: str) -> None:
        """Make ``user_id`` the author of the next writes; it appears as a User record.

        The emulator core owns users; the data API registers each caller on its first
        call, so ``SELECT Id FROM User WHERE Username = ...`` and ``Owner.Name`` work.
        """
        self.acting_user = user_id
        if user_id not in self._live["User"]:
            self._add_user(user_id, username, username.partition("@")[0])

    def _add_user(self, user_id: str, username: str, name: str) -> None:
        stamp = format_datetime(self.clock.time())
        first, _, last = name.rpartition(" ")
        self._live["User"][user_id] = {
            "Id": user_id,
            "CreatedDate": stamp,
            "CreatedById": self.owner_id,
            "LastModifiedDate": stamp,
            "LastModifiedById": self.owner_id,
            "SystemModstamp": stamp,
            "Username": username,
            "LastName": last,
            "FirstName": first or None,
            "Name": name,
            "Email": username,
            "Alias": last[:8].lower(),
            "IsActive": True,
            "UserType": "Standard",
        }

    # -- ids and schema ------------------------------------------------------------------

    def new_id(self, key_prefix: str) -> str:
        """The next unused 18-character id with ``key_prefix``."""
        n = self._counters.get(key_prefix, 0) + 1
        self._counters[key_prefix] = n
        # Start counters high enough that ids look like real ones (upper-case letters).
        return make_id(key_prefix, 14_000_000_000 + n)

    @staticmethod
    def schema(sobject: str) -> SObjectSchema | None:
        """The schema of ``sobject`` in any casing, or None when unknown."""
        return schema_named(sobject)

    @staticmethod
    def schema_for_id(record_id: str) -> SObjectSchema | None:
        """The schema whose key prefix starts ``record_id``."""
        return SCHEMAS_BY_PREFIX.get(record_id[:3])

    @staticmethod
    def schemas() -> list[SObjectSchema]:
        """Every supported sObject type."""
        return list(SCHEMAS.values())

    # -- reads ---------------------------------------------------------------------------

    def get(self, sobject: str, record_id: str) -> Record | None:
        """The live record (the stored dict: do not mutate), or None."""
        if len(record_id) == 15:
            record_id = id15_to_18(record_id)
        return self._live[sobject].get(record_id)

    def rows(self, sobject: str, include_deleted: bool = False) -> Iterator[Record]:
        """Records in creation order; deleted ones after them when ``include_deleted``."""
        yield from self._live[sobject].values()
        if include_deleted:
            yield from self._deleted[sobject].values()

    def count(self, sobject: str) -> int:
        """Number of live records of ``sobject``."""
        return len(self._live[sobject])

    def recent(self, sobject: str, n: int = 5) -> list[Record]:
        """The last ``n`` created live records, newest first."""
        items = list(self._live[sobject].values())[-n:]
        items.reverse()
        return items

    # -- writes --------------------------------------------------------------------------

    def create(self, sobject: str, values: dict[str, Any]) -> Record:
        """Insert a record (validated like Salesforce); returns the stored record."""
        schema = SCHEMAS[sobject]
        clean = self._validate(schema, values, creating=True)
        missing = [
            f.name
            for f in schema.fields
            if f.required and clean.get(f.name) in (None, "") and f.default is None
        ]
        if missing:
            raise RecordError(
                400,
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [" + ", ".join(missing) + "]",
                missing,
            )
        now = format_datetime(self.clock.time())
        rid = self.new_id(schema.key_prefix)
        record: Record = {f.name: f.default for f in schema.fields}
        system = {
            "Id": rid,
            "IsDeleted": False,
            "OwnerId": self.acting_user,
            "CreatedDate": now,
            "CreatedById": self.acting_user,
            "LastModifiedDate": now,
            "LastModifiedById": self.acting_user,
            "SystemModstamp": now,
        }
        record.update({k: v for k, v in system.items() if k in record})
        if "HasOptedOutOfEmail" in record:
            record["HasOptedOutOfEmail"] = False
        record.update(clean)
        _derive(schema, record)
        self._live[sobject][rid] = record
        if self._journal is not None:
            self._journal.append(_Undo(sobject, rid, None, False))
        return record

    def update(self, sobject: str, record_id: str, values: dict[str, Any]) -> Record:
        """Change fields of a live record; NOT_FOUND when it does not exist."""
        schema = SCHEMAS[sobject]
        record = self.get(sobject, record_id)
        if record is None:
            raise not_found()
        clean = self._validate(schema, values, creating=False)
        blanked = [
            k
            for k, v in clean.items()
            if v in (None, "") and (f := schema.field(k)) is not None and not f.nillable
        ]
        if blanked:
            raise RecordError(
                400,
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [" + ", ".join(blanked) + "]",
                blanked,
            )
        if self._journal is not None:
            self._journal.append(_Undo(sobject, record["Id"], dict(record), False))
        record.update(clean)
        now = format_datetime(self.clock.time())
        record["LastModifiedDate"] = now
        record["LastModifiedById"] = self.acting_user
        record["SystemModstamp"] = now
        _derive(schema, record)
        return record

    def delete(self, sobject: str, record_id: str) -> None:
        """Move a live record to the recycle bin (seen by queryAll with IsDeleted true)."""
        record = self.get(sobject, record_id)
        if record is None:
            if self._is_deleted(sobject, record_id):
                raise RecordError(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise not_found()
        if self._journal is not None:
            self._journal.append(_Undo(sobject, record["Id"], dict(record), False))
        del self._live[sobject][record["Id"]]
        record["IsDeleted"] = True
        record["SystemModstamp"] = format_datetime(self.clock.time())
        self._deleted[sobject][record["Id"]] = record

    def _is_deleted(self, sobject: str, record_id: str) -> bool:
        if len(record_id) == 15:
            record_id = id15_to_18(record_id)
        return record_id in self._deleted[sobject]

    # -- transactions (composite allOrNone) ----------------------------------------------

    def begin(self) -> None:
        """Start journaling writes so :meth:`rollback` can undo them."""
        self._journal = []

    def commit(self) -> None:
        """Stop journaling and keep the writes."""
        self._journal = None

    def rollback(self) -> None:
        """Undo every write since :meth:`begin`, newest first."""
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            live, deleted = self._live[undo.sobject], self._deleted[undo.sobject]
            deleted.pop(undo.record_id, None)
            if undo.before is None:
                live.pop(undo.record_id, None)
            else:
                current = live.get(undo.record_id)
                if current is not None:
                    current.clear()
                    current.update(undo.before)
                else:
                    restored = dict(undo.before)
                    live[undo.record_id] = restored

    # -- validation ----------------------------------------------------------------------

    @staticmethod
    def _validate(schema: SObjectSchema, values: dict[str, Any], creating: bool) -> Record:
        clean: Record = {}
        readonly: list[str] = []
        for key, value in values.items():
            if key == "attributes":
                continue
            spec = schema.field(key)
            if spec is None:
                raise RecordError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{key}' on sobject of type {schema.name}",
                )
            if not (spec.createable if creating else spec.updateable):
                readonly.append(spec.name)
                continue
            clean[spec.name] = _coerce(spec, value)
        if readonly:
            raise RecordError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                "Unable to create/update fields: "
                + ", ".join(readonly)
                + ". Please check the security settings of this field and verify that it is "
                "read/write for your profile or permission set.",
                readonly,
            )
        return clean

    # -- seed ----------------------------------------------------------------------------

    def _seed(self, seed: int) -> None:
        rng = random.Random(seed)
        base = 1_767_225_600.0 - 86_400 * 365  # 2025-01-01: seed data predates "now"
        accounts = self._live["Account"]
        account_ids: list[str] = []
        owner = self.owner_id
        for i in range(SEED_ACCOUNTS):
            rid = self.new_id("001")
            stamp = format_datetime(base + i * 3600)
            name = f"{_COMPANY[i % len(_COMPANY)]} {_SUFFIX[rng.randrange(len(_SUFFIX))]} {i}"
            accounts[rid] = {
                "Id": rid,
                "IsDeleted": False,
                "OwnerId": owner,
                "CreatedDate": stamp,
                "CreatedById": owner,
                "LastModifiedDate": stamp,
                "LastModifiedById": owner,
                "SystemModstamp": stamp,
                "Name": name,
                "Type": rng.choice(ACCOUNT_TYPES),
                "Industry": rng.choice(INDUSTRIES),
                "BillingStreet": f"{rng.randrange(1, 999)} Main St",
                "BillingCity": rng.choice(_CITIES),
                "BillingState": None,
                "BillingPostalCode": f"{rng.randrange(10000, 99999)}",
                "BillingCountry": None,
                "Phone": f"+1 555 {rng.randrange(1000, 9999)}",
                "Website": f"https://www.{name.split(maxsplit=1)[0].lower()}{i}.example",
                "AnnualRevenue": float(rng.randrange(1, 500) * 100_000),
                "NumberOfEmployees": rng.randrange(5, 50_000),
                "Description": None,
                "ParentId": None,
            }
            account_ids.append(rid)
        contacts = self._live["Contact"]
        rnd = rng.random  # rng.randrange is 5x slower; construction must stay fast
        for i in range(SEED_CONTACTS):
            rid = self.new_id("003")
            stamp = format_datetime(base + 86_400 + i * 60)
            first = _FIRST[int(rnd() * len(_FIRST))]
            last = _LAST[int(rnd() * len(_LAST))]
            contacts[rid] = {
                "Id": rid,
                "IsDeleted": False,
                "OwnerId": owner,
                "CreatedDate": stamp,
                "CreatedById": owner,
                "LastModifiedDate": stamp,
                "LastModifiedById": owner,
                "SystemModstamp": stamp,
                "AccountId": account_ids[i % SEED_ACCOUNTS],
                "FirstName": first,
                "LastName": last,
                "Name": f"{first} {last}",
                "Email": f"{first.lower()}.{last.lower()}{i}@example.com",
                "Phone": None,
                "Title": _TITLES[int(rnd() * len(_TITLES))],
                "Department": None,
                "MailingCity": _CITIES[int(rnd() * len(_CITIES))],
                "MailingCountry": None,
                "LeadSource": LEAD_SOURCES[int(rnd() * len(LEAD_SOURCES))],
                "Birthdate": f"19{50 + i % 49}-0{1 + i % 9}-1{i % 10}",
                "HasOptedOutOfEmail": i % 7 == 0,
                "Description": None,
            }


def _coerce(spec: FieldSpec, value: Any) -> Any:
    """Check a written value against the field type (JSON values, as the REST API takes)."""
    if value is None:
        return None
    kind = spec.type
    ok: bool
    if kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind in ("double", "currency", "percent"):
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                ok = False
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
        if not ok and isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    if not ok:
        raise RecordError(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from {type(value).__name__} value "
            f"{value!r} at [line:1] for field {spec.name}",
        )
    text_kinds = ("string", "textarea", "email", "phone", "url", "picklist")
    if kind in text_kinds and spec.length and len(value) > spec.length:
        raise RecordError(
            400,
            "STRING_TOO_LONG",
            f"{spec.label}: data value too large: {value[:40]} (max length={spec.length})",
            [spec.name],
        )
    if kind == "reference" and value and not is_valid_id(value):
        raise RecordError(
            400,
            "MALFORMED_ID",
            f"{spec.label}: id value of incorrect type: {value}",
            [spec.name],
        )
    if kind == "reference" and len(value) == 15:
        return id15_to_18(value)
    return value


def _derive(schema: SObjectSchema, record: Record) -> None:
    """Keep calculated fields (Contact/Lead.Name, Opportunity.IsClosed) current."""
    if schema.name in ("Contact", "Lead", "User"):
        first = record.get("FirstName")
        record["Name"] = f"{first} {record['LastName']}" if first else record.get("LastName")
    elif schema.name == "Opportunity":
        record["IsClosed"] = str(record.get("StageName") or "").startswith("Closed")
