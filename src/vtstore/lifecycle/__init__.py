"""The backup lifecycle: forgetting states (`forget`), reclaiming the blocks no
state needs any more (`gc`), and spool datadirs that push their sealed data
files elsewhere and drop them (`pool`).  See docs/GC.md."""
