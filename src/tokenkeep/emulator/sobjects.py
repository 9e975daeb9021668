"""sObject types the emulator knows: fields with describe metadata, key prefixes, labels.

A small, realistic standard-object schema (Account, Contact, Opportunity, Lead, Case)
with the describe attributes clients read (``nillable``, ``createable``, ``updateable``,
``type``, ``referenceTo``, ``relationshipName``...). Names are case-insensitive on
Salesforce, so every lookup goes through lower-case maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACCOUNT_TYPES",
    "INDUSTRIES",
    "LEAD_SOURCES",
    "SCHEMAS",
    "SCHEMAS_BY_PREFIX",
    "FieldSpec",
    "SObjectSchema",
    "schema_named",
]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Describe metadata of one field (the subset clients read)."""

    name: str
    type: str
    label: str
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    required: bool = False  # not nillable, no default: REQUIRED_FIELD_MISSING on create
    length: int = 0
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    child_relationship: str | None = None  # the parent's name for the list of children
    picklist: tuple[str, ...] = ()
    calculated: bool = False
    default: Any = None

    def describe(self) -> dict[str, Any]:
        """The field as ``/sobjects/{type}/describe`` lists it."""
        soap = _SOAP_TYPES.get(self.type, "xsd:string")
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": soap,
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": 18 if self.type in ("currency", "double", "percent") else 0,
            "scale": 2 if self.type in ("currency", "double", "percent") else 0,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.default is not None or self.name in _SYSTEM_DEFAULTED,
            "calculated": self.calculated,
            "custom": False,
            "externalId": False,
            "idLookup": self.name in ("Id", "Email", "Name") and not self.calculated,
            "filterable": self.type != "textarea",
            "sortable": self.type != "textarea",
            "groupable": self.type not in ("textarea", "double", "currency", "percent"),
            "unique": False,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "picklistValues": [
                {"active": True, "defaultValue": False, "label": v, "validFor": None, "value": v}
                for v in self.picklist
            ],
            "defaultValue": self.default,
            "autoNumber": False,
            "cascadeDelete": False,
            "htmlFormatted": False,
            "nameField": self.name == "Name",
            "restrictedPicklist": False,
            "deprecatedAndHidden": False,
        }


_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
_SYSTEM_DEFAULTED = frozenset(
    {"Id", "IsDeleted", "OwnerId", "CreatedDate", "CreatedById", "LastModifiedDate"}
    | {"LastModifiedById", "SystemModstamp"}
)


def _system_fields() -> list[FieldSpec]:
    ro: dict[str, Any] = {"createable": False, "updateable": False, "nillable": False}
    return [
        FieldSpec("Id", "id", "Record ID", length=18, **ro),
        FieldSpec("IsDeleted", "boolean", "Deleted", **ro),
        FieldSpec(
            "OwnerId",
            "reference",
            "Owner ID",
            nillable=False,
            length=18,
            reference_to=("User",),
            relationship_name="Owner",
        ),
        FieldSpec("CreatedDate", "datetime", "Created Date", **ro),
        FieldSpec("CreatedById", "reference", "Created By ID", length=18, **ro),
        FieldSpec("LastModifiedDate", "datetime", "Last Modified Date", **ro),
        FieldSpec("LastModifiedById", "reference", "Last Modified By ID", length=18, **ro),
        FieldSpec("SystemModstamp", "datetime", "System Modstamp", **ro),
    ]


def _s(name: str, label: str, length: int = 255, **kw: Any) -> FieldSpec:
    return FieldSpec(name, kw.pop("type", "string"), label, length=length, **kw)


@dataclass(slots=True)
class SObjectSchema:
    """One sObject type: its names, key prefix and fields (canonical order)."""

    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: list[FieldSpec]
    by_lower: dict[str, FieldSpec] = field(default_factory=dict)
    # Child relationships by lower-case name: "contacts" -> (Contact, AccountId).
    children: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_lower = {f.name.lower(): f for f in self.fields}

    def field(self, name: str) -> FieldSpec | None:
        """The field named ``name`` in any casing, or None."""
        return self.by_lower.get(name.lower())

    def summary(self, version: str) -> dict[str, Any]:
        """The entry of describeGlobal / ``objectDescribe``."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "activateable": False,
            "createable": True,
            "custom": False,
            "customSetting": False,
            "deletable": True,
            "deprecatedAndHidden": False,
            "feedEnabled": True,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": self.label_plural,
            "layoutable": True,
            "mergeable": self.name in ("Account", "Contact", "Lead"),
            "mruEnabled": True,
            "name": self.name,
            "queryable": True,
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": True,
            "updateable": True,
            "urls": {
                "rowTemplate": base + "/{ID}",
                "defaultValues": base + "/defaultValues?recordTypeId&fields",
                "describe": base + "/describe",
                "sobject": base,
            },
        }

    def describe(self, version: str) -> dict[str, Any]:
        """The body of ``/sobjects/{type}/describe``."""
        body = self.summary(version)
        body["fields"] = [f.describe() for f in self.fields]
        body["childRelationships"] = [
            {
                "cascadeDelete": False,
                "childSObject": child,
                "deprecatedAndHidden": False,
                "field": field_name,
                "relationshipName": name,
                "restrictedDelete": False,
            }
            for name, child, field_name in self.children.values()
        ]
        body["recordTypeInfos"] = []
        body["supportedScopes"] = [
            {"label": "All " + self.label_plural.lower(), "name": "everything"}
        ]
        return body


INDUSTRIES = ("Technology", "Banking", "Retail", "Energy", "Healthcare", "Media")
ACCOUNT_TYPES = ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other")
LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Closed Won", "Closed Lost")
_LEAD_STATUS = ("Open - Not Contacted", "Working - Contacted", "Closed - Converted")
_CASE_STATUS = ("New", "Working", "Escalated", "Closed")


def _ref(
    name: str, label: str, target: str, rel: str, children: str | None = None, **kw: Any
) -> FieldSpec:
    return FieldSpec(
        name,
        "reference",
        label,
        length=18,
        reference_to=(target,),
        relationship_name=rel,
        child_relationship=children,
        **kw,
    )


def _build_schemas() -> dict[str, SObjectSchema]:
    calc = {"createable": False, "updateable": False, "calculated": True}
    account = SObjectSchema(
        "Account",
        "Account",
        "Accounts",
        "001",
        [
            *_system_fields(),
            _s("Name", "Account Name", nillable=False, required=True),
            _s("Type", "Account Type", type="picklist", picklist=ACCOUNT_TYPES),
            _s("Industry", "Industry", type="picklist", picklist=INDUSTRIES),
            _s("BillingStreet", "Billing Street", type="textarea"),
            _s("BillingCity", "Billing City", 40),
            _s("BillingState", "Billing State/Province", 80),
            _s("BillingPostalCode", "Billing Zip/Postal Code", 20),
            _s("BillingCountry", "Billing Country", 80),
            _s("Phone", "Account Phone", 40, type="phone"),
            _s("Website", "Website", type="url"),
            _s("AnnualRevenue", "Annual Revenue", 0, type="currency"),
            _s("NumberOfEmployees", "Employees", 0, type="int"),
            _s("Description", "Account Description", 32000, type="textarea"),
            _ref("ParentId", "Parent Account ID", "Account", "Parent", "ChildAccounts"),
        ],
    )
    contact = SObjectSchema(
        "Contact",
        "Contact",
        "Contacts",
        "003",
        [
            *_system_fields(),
            _ref("AccountId", "Account ID", "Account", "Account", "Contacts"),
            _s("FirstName", "First Name", 40),
            _s("LastName", "Last Name", 80, nillable=False, required=True),
            _s("Name", "Full Name", 121, **calc),
            _s("Email", "Email", 80, type="email"),
            _s("Phone", "Business Phone", 40, type="phone"),
            _s("Title", "Title", 128),
            _s("Department", "Department", 80),
            _s("MailingCity", "Mailing City", 40),
            _s("MailingCountry", "Mailing Country", 80),
            _s("LeadSource", "Lead Source", type="picklist", picklist=LEAD_SOURCES),
            _s("Birthdate", "Birthdate", 0, type="date"),
            _s("HasOptedOutOfEmail", "Email Opt Out", 0, type="boolean", nillable=False),
            _s("Description", "Contact Description", 32000, type="textarea"),
        ],
    )
    opportunity = SObjectSchema(
        "Opportunity",
        "Opportunity",
        "Opportunities",
        "006",
        [
            *_system_fields(),
            _ref("AccountId", "Account ID", "Account", "Account", "Opportunities"),
            _s("Name", "Name", 120, nillable=False, required=True),
            _s(
                "StageName",
                "Stage",
                type="picklist",
                picklist=_STAGES,
                nillable=False,
                required=True,
            ),
            _s("CloseDate", "Close Date", 0, type="date", nillable=False, required=True),
            _s("Amount", "Amount", 0, type="currency"),
            _s("Probability", "Probability (%)", 0, type="percent"),
            _s("IsClosed", "Closed", 0, type="boolean", nillable=False, **calc),
            _s("Description", "Description", 32000, type="textarea"),
        ],
    )
    lead = SObjectSchema(
        "Lead",
        "Lead",
        "Leads",
        "00Q",
        [
            *_system_fields(),
            _s("FirstName", "First Name", 40),
            _s("LastName", "Last Name", 80, nillable=False, required=True),
            _s("Name", "Full Name", 121, **calc),
            _s("Company", "Company", nillable=False, required=True),
            _s("Email", "Email", 80, type="email"),
            _s("Phone", "Phone", 40, type="phone"),
            _s(
                "Status",
                "Lead Status",
                type="picklist",
                picklist=_LEAD_STATUS,
                nillable=False,
                default=_LEAD_STATUS[0],
            ),
            _s("LeadSource", "Lead Source", type="picklist", picklist=LEAD_SOURCES),
        ],
    )
    case = SObjectSchema(
        "Case",
        "Case",
        "Cases",
        "500",
        [
            *_system_fields(),
            _ref("AccountId", "Account ID", "Account", "Account", "Cases"),
            _ref("ContactId", "Contact ID", "Contact", "Contact", "Cases"),
            _s("Subject", "Subject"),
            _s(
                "Status",
                "Status",
                type="picklist",
                picklist=_CASE_STATUS,
                nillable=False,
                default="New",
            ),
            _s("Priority", "Priority", type="picklist", picklist=("High", "Medium", "Low")),
            _s("Description", "Description", 32000, type="textarea"),
        ],
    )
    ro: dict[str, Any] = {"createable": False, "updateable": False}
    user = SObjectSchema(
        "User",
        "User",
        "Users",
        "005",
        [
            f
            for f in _system_fields()
            if f.name not in ("OwnerId", "IsDeleted")  # a User has neither
        ]
        + [
            _s("Username", "Username", 80, nillable=False, required=True),
            _s("LastName", "Last Name", 80, nillable=False, required=True),
            _s("FirstName", "First Name", 40),
            _s("Name", "Full Name", 121, **calc),
            _s("Email", "Email", 128, type="email", nillable=False, required=True),
            _s("Alias", "Alias", 8),
            _s("IsActive", "Active", 0, type="boolean", nillable=False, default=True),
            _s("UserType", "User Type", type="picklist", picklist=("Standard",), **ro),
        ],
    )
    schemas = {s.name: s for s in (account, contact, opportunity, lead, case, user)}
    for child in schemas.values():
        for spec in child.fields:
            if spec.child_relationship and spec.reference_to[0] in schemas:
                parent = schemas[spec.reference_to[0]]
                relation = (spec.child_relationship, child.name, spec.name)
                parent.children[spec.child_relationship.lower()] = relation
    return schemas


SCHEMAS: dict[str, SObjectSchema] = _build_schemas()
SCHEMAS_LOWER = {name.lower(): s for name, s in SCHEMAS.items()}
SCHEMAS_BY_PREFIX = {s.key_prefix: s for s in SCHEMAS.values()}


def schema_named(name: str) -> SObjectSchema | None:
    """The schema of ``name`` in any casing, or None."""
    return SCHEMAS_LOWER.get(name.lower())
