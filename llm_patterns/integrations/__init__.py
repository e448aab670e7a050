"""Integrations of the library with the frameworks that run pipelines.

``airflow``: the patterns mapped onto Apache Airflow 3.3 (retry policy, rescheduling on
backpressure, cost through XCom, callbacks), and ``airflow_standalone``: the course's local
Airflow (``make airflow``). Importing this package imports no framework.
"""
