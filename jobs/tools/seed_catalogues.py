"""The synthetic population's catalogues: cities, quiz questions, interest subjects, first names.

Data, not logic: :mod:`jobs.tools.seed` draws users, answers, interests and names from these.
"""

from __future__ import annotations

CITIES: tuple[tuple[str, float, float], ...] = (
    ("New York", 40.7128, -74.0060),
    ("Los Angeles", 34.0522, -118.2437),
    ("Chicago", 41.8781, -87.6298),
    ("Houston", 29.7604, -95.3698),
    ("Phoenix", 33.4484, -112.0740),
    ("Philadelphia", 39.9526, -75.1652),
    ("San Antonio", 29.4241, -98.4936),
    ("San Diego", 32.7157, -117.1611),
    ("Dallas", 32.7767, -96.7970),
    ("San Jose", 37.3382, -121.8863),
    ("Austin", 30.2672, -97.7431),
    ("Jacksonville", 30.3322, -81.6557),
    ("San Francisco", 37.7749, -122.4194),
    ("Columbus", 39.9612, -82.9988),
    ("Seattle", 47.6062, -122.3321),
    ("Denver", 39.7392, -104.9903),
    ("Boston", 42.3601, -71.0589),
    ("Nashville", 36.1627, -86.7816),
    ("Portland", 45.5152, -122.6784),
    ("Atlanta", 33.7490, -84.3880),
)
CITY_ZIPF_EXPONENT = 0.9
CITY_JITTER_KM = 15.0

# The "realistic" layout (jobs.tools.seed.city_layout): up to N_PLACES places whose sizes follow
# Zipf(PLACE_ZIPF_EXPONENT) by rank, so the biggest holds ~8 % of users (New York holds ~6 %
# of the US). Ranks 1..len(METROS) are these real metros, biggest first (CITIES, then 30
# more); every other place is a town near one metro (its region), at a distance drawn from
# TOWN_DISTANCE_KM. Places are generated from PLACES_SEED, not from the population's seed,
# so every seed shares one map. A place's jitter radius shrinks with its size, from
# CITY_JITTER_KM for the biggest to MIN_PLACE_JITTER_KM.
METROS: tuple[tuple[str, float, float], ...] = (
    *CITIES,
    ("Miami", 25.7617, -80.1918),
    ("Washington", 38.9072, -77.0369),
    ("Minneapolis", 44.9778, -93.2650),
    ("Detroit", 42.3314, -83.0458),
    ("Tampa", 27.9506, -82.4572),
    ("St. Louis", 38.6270, -90.1994),
    ("Baltimore", 39.2904, -76.6122),
    ("Orlando", 28.5383, -81.3792),
    ("Charlotte", 35.2271, -80.8431),
    ("Sacramento", 38.5816, -121.4944),
    ("Pittsburgh", 40.4406, -79.9959),
    ("Las Vegas", 36.1699, -115.1398),
    ("Cincinnati", 39.1031, -84.5120),
    ("Kansas City", 39.0997, -94.5786),
    ("Cleveland", 41.4993, -81.6944),
    ("Indianapolis", 39.7684, -86.1581),
    ("Salt Lake City", 40.7608, -111.8910),
    ("Raleigh", 35.7796, -78.6382),
    ("Milwaukee", 43.0389, -87.9065),
    ("New Orleans", 29.9511, -90.0715),
    ("Oklahoma City", 35.4676, -97.5164),
    ("Memphis", 35.1495, -90.0490),
    ("Louisville", 38.2527, -85.7585),
    ("Richmond", 37.5407, -77.4360),
    ("Buffalo", 42.8864, -78.8784),
    ("Albuquerque", 35.0844, -106.6504),
    ("Tucson", 32.2226, -110.9747),
    ("Omaha", 41.2565, -95.9345),
    ("Birmingham", 33.5186, -86.8104),
    ("Boise", 43.6150, -116.2023),
)
N_PLACES = 1000
USERS_PER_PLACE = 50  # a population of N users lives in the N // 50 biggest places ...
MIN_PLACES = 20  # ... but in at least 20
PLACE_ZIPF_EXPONENT = 0.85
PLACES_SEED = 20261203
TOWN_DISTANCE_KM = (10.0, 80.0)  # uniform in [near, far] from the town's metro
MIN_PLACE_JITTER_KM = 3.0
TOWN_PREFIXES = (
    "North", "South", "East", "West", "Lake", "Port", "Fair", "Green", "Spring", "Oak",
    "Maple", "River", "Cedar", "Pine", "Clear", "Mill", "Glen", "Rock", "Elm", "Brook",
)  # fmt: skip
TOWN_SUFFIXES = (
    "field", "ville", "wood", "dale", "ton", " Heights", " Park", "ford", "view", " Falls",
)  # fmt: skip

# (text, weight, is_active) on a 1-5 Likert scale (1 = strongly disagree, 5 = strongly agree)
QUIZ_QUESTIONS: tuple[tuple[str, float, bool], ...] = (
    ("I'd rather spend a weekend outdoors than in the city.", 1.0, True),
    ("I enjoy big parties more than quiet evenings.", 1.0, True),
    ("I want children someday.", 2.0, True),
    ("Religion or spirituality is important in my life.", 1.0, True),
    ("I like to plan things well in advance.", 1.0, True),
    ("Politics is a topic I care a lot about.", 0.5, True),
    ("I'd happily move to another city for a partner.", 1.0, True),
    ("I'm looking for a long-term relationship.", 2.0, True),
    ("I love trying new foods.", 1.0, True),
    ("I consider myself ambitious about my career.", 1.0, True),
    ("Keeping fit is a big part of my routine.", 1.0, True),
    ("I want a partner who shares my political views.", 2.0, True),
    ("I'm a morning person.", 1.0, True),
    ("I spend a lot of time reading.", 1.0, True),
    ("Astrology says a lot about a person.", 1.0, False),
    ("I enjoy travelling to places I've never been.", 1.0, True),
    ("I'd rather save money than spend it on experiences.", 1.0, True),
    ("Pets are a must in my home.", 1.0, True),
    ("I like to talk through conflicts right away.", 1.0, True),
    ("Family traditions matter a lot to me.", 2.0, True),
    ("I'm comfortable being the centre of attention.", 1.0, True),
    ("I prefer a tidy home.", 1.0, True),
    ("Humour is the most attractive quality.", 1.0, True),
    ("I drink alcohol socially.", 0.5, True),
    ("I'd describe myself as adventurous.", 1.0, True),
    ("I need a lot of time on my own.", 1.0, True),
    ("Art and culture are important to me.", 1.0, True),
    ("I'd go on a first date on a weeknight.", 1.0, False),
    ("I value honesty over tact.", 1.0, True),
    ("Smoking is a deal-breaker for me.", 1.5, True),
)
QUIZ_SCALE = (1.0, 5.0)


def _words(text: str) -> tuple[str, ...]:
    """Comma-separated names as a tuple (keeps the catalogues below compact)."""
    return tuple(word.strip() for word in text.split(","))


SUBJECTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "outdoors",
        _words(
            "hiking, camping, cycling, climbing, surfing, skiing, kayaking, "
            "gardening, fishing, birdwatching"
        ),
    ),
    (
        "music",
        _words(
            "indie, hip hop, rock, jazz, electronic, classical, karaoke, country, "
            "live concerts, opera"
        ),
    ),
    (
        "food & drink",
        _words(
            "coffee, cooking, sushi, brunch, wine, craft beer, baking, street food, "
            "vegan food, barbecue"
        ),
    ),
    (
        "arts & culture",
        _words(
            "film, museums, photography, theater, comedy, painting, dance, "
            "architecture, design, poetry"
        ),
    ),
    (
        "sports & fitness",
        _words(
            "gym, running, yoga, soccer, basketball, tennis, swimming, pilates, "
            "boxing, martial arts"
        ),
    ),
    (
        "games & tech",
        _words(
            "video games, podcasts, board games, sci-fi, anime, coding, puzzles, "
            "chess, gadgets, esports"
        ),
    ),
    (
        "travel",
        _words(
            "road trips, beaches, city breaks, backpacking, national parks, "
            "learning languages, food tours, history, train travel, cruises"
        ),
    ),
    (
        "lifestyle",
        _words(
            "reading, dogs, cats, volunteering, meditation, fashion, trivia nights, "
            "thrift shopping, clubbing, astrology"
        ),
    ),
)
INTEREST_ZIPF_EXPONENT = 1.1

FIRST_NAMES: dict[int, tuple[str, ...]] = {
    0: _words(
        "Emma, Olivia, Ava, Sophia, Mia, Isabella, Amelia, Harper, Evelyn, Abigail, Emily, "
        "Ella, Elizabeth, Camila, Luna, Sofia, Avery, Mila, Aria, Scarlett, Penelope, Layla, "
        "Chloe, Victoria, Madison, Eleanor, Grace, Nora, Riley, Zoey, Hannah, Hazel, Lily, "
        "Ellie, Violet, Lillian, Zoe, Stella, Aurora, Natalie"
    ),
    1: _words(
        "Liam, Noah, Oliver, Elijah, James, William, Benjamin, Lucas, Henry, Theodore, Jack, "
        "Levi, Alexander, Jackson, Mateo, Daniel, Michael, Mason, Sebastian, Ethan, Logan, "
        "Owen, Samuel, Jacob, Asher, Aiden, John, Joseph, Wyatt, David, Leo, Luke, Julian, "
        "Hudson, Grayson, Matthew, Ezra, Gabriel, Carter, Isaac"
    ),
    2: _words(
        "Alex, Sam, Jordan, Taylor, Casey, Riley, Jamie, Morgan, Quinn, Avery, Rowan, Sage, "
        "Skyler, Charlie, Emerson, Finley, Hayden, Reese, Dakota, Parker"
    ),
}
