"""`llm-edge status`: the live topology of a deployment, from the NATS services framework (`$SRV.*`)
and the nats-server monitoring port.
"""
