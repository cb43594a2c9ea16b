"""Retail: products and prices per market and stall with their history, electronic shelf labels (binding,
server-side rendering, compact frames through base stations, timed changes, roaming, LED), scale ↔ label
price sync, the scale transaction ledger with anomaly flags, scale integrity and calibration grants, and
metrology due dates. See docs/retail.md.

ORM models are loaded by tortoise from "retail.models"; `retail.esl_codec` needs only the standard library.
"""
