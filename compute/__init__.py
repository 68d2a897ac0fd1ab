"""Pure numeric core of matchjobs: arrays in, arrays out.

Nothing here touches a database, Ray, files, the clock or the environment.
"""
