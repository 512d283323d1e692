"""Pets has no background jobs.

Pet of the Day needs no scheduler: the first request of each UTC day picks it
(see ``service.do_pick_pet_of_the_day``), and the primary key on the day makes
that pick once, however many processes ask at the same moment.
"""
