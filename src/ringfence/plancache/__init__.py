"""The plan cache: a compiled Linux plan kept between one-shot runs of the same request, so
that ``ringfence run`` does not resolve, gather and compile the same plan again."""
