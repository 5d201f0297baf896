"""The collector: a tracking pixel, an HTTP events API and e-mail webhooks in front of Kafka.

A stateless process (``leadscore collect``): every request is validated, turned into the
contract's JSON and produced with an idempotent producer (``acks=all``) before it is answered.
"""
