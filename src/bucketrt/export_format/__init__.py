"""What an export folder is: its manifest (bucketrt.json) and the tasks, heads and dim names its
graphs follow. Written by the exporter, read by everything that runs or checks an export."""
