"""pytest plugin (entry point ``pytest11``): fixtures users can use in their own tests.

``salesforce_emulator`` starts the Salesforce org emulator on loopback for one test.
"""

from __future__ import annotations
