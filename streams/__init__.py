"""Stream processors: the sharing router and the hit matcher, each a librdkafka batch loop
(``streams.batchloop``) around pure logic (``streams.router``, ``streams.matcher``)."""
