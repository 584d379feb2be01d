"""What records become: the regression gate (:mod:`.compare`), the asv results database
(:mod:`.asvdb`), the tables (:mod:`.tables`) of the terminal summary (:mod:`.summary`) and of the
report (:mod:`.report`). Reads records only; direction, kind and units come from :mod:`harness.metrics`."""
