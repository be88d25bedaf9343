"""Where a store's bytes live, apart from how they are arranged.

- `base`: the backend interface (put, put_if_absent, get, get_range, stat,
  list, delete) and `Retrying`, which wraps any backend with retries;
- `localdir`: a local directory, one file per object;
- `s3`: an S3-compatible bucket (obstore);
- `packs`: `PackStore`, blocks in `.vtd` packs with index objects, over any backend
  (`packindex`: the index object; `packcheck`: its fsck; `layout`: the config object);
- `objects`: `BlockObjectStore`, one object per block, over any backend;
- `archives`: archives kept as objects, one object per state.
"""
