"""The sanity suite's fixed queries (`benchmarks/sanity.py`): obvious English texts,
five per demo culture, written from general knowledge and not tuned on any answer.
None names its culture, its country or a word stem of the demo corpus's tagging regex
for that culture (tests/unit/test_sanity_queries.py)."""

from __future__ import annotations

# (query, expected culture): five per demo culture (culturesim_ray.demo.CULTURES)
QUERIES: list[tuple[str, str]] = [
    ("Whirling dervishes spin in prayer in Konya", "Turkish"),
    ("The sultan ruled his empire from the Topkapi Palace", "Turkish"),
    ("The Blue Mosque overlooks the Bosphorus strait", "Turkish"),
    ("Atatürk founded the republic and made Ankara its capital", "Turkish"),
    ("Doner kebab with a glass of ayran", "Turkish"),

    ("The Parthenon stands on the Acropolis", "Greek"),
    ("Zeus ruled the gods from Mount Olympus", "Greek"),
    ("Souvlaki, feta cheese and a glass of ouzo", "Greek"),
    ("Socrates and Plato debated philosophy in the agora", "Greek"),
    ("Homer's Iliad tells of the siege of Troy", "Greek"),

    ("Cyrus the Great built the palace of Persepolis", "Persian"),
    ("Families celebrate Nowruz, the new year, at the spring equinox", "Persian"),
    ("The prophet Zarathustra and the sacred fire of the Zoroastrians", "Persian"),
    ("Ferdowsi wrote the Shahnameh, the epic of the kings", "Persian"),
    ("Hand-knotted carpets from the bazaars of Isfahan and Shiraz", "Persian"),

    ("Mummies were buried inside the pyramids of Giza", "Egyptian"),
    ("The Sphinx guards the tombs beside the Nile", "Egyptian"),
    ("Tutankhamun's golden mask was found in the Valley of the Kings", "Egyptian"),
    ("Hieroglyphs are carved on the temple walls of Luxor and Karnak", "Egyptian"),
    ("Osiris, Isis and the sun god Ra", "Egyptian"),

    ("The Taj Mahal in Agra", "Indian"),
    ("Playing a raga on the sitar and tabla", "Indian"),
    ("Families light oil lamps for Diwali, the festival of lights", "Indian"),
    ("Mahatma Gandhi led the salt march against British rule", "Indian"),
    ("Bollywood films with song-and-dance numbers made in Mumbai", "Indian"),

    ("The Great Wall stretches along the northern frontier", "Chinese"),
    ("The emperor lived in the Forbidden City", "Chinese"),
    ("The terracotta army guards the tomb of the first emperor at Xi'an", "Chinese"),
    ("Dim sum and Peking duck", "Chinese"),
    ("Mao Zedong proclaimed the People's Republic", "Chinese"),

    ("Sushi and sake", "Japanese"),
    ("Cherry blossoms beneath Mount Fuji", "Japanese"),
    ("Kabuki theatre and geisha in kimono", "Japanese"),
    ("Sumo wrestlers and Shinto shrines with red torii gates", "Japanese"),
    ("A haiku by Matsuo Bashō", "Japanese"),

    ("Bratwurst, sauerkraut and beer at the Oktoberfest in Munich", "German"),
    ("Martin Luther nailed his theses to the church door in Wittenberg", "German"),
    ("Chancellor Bismarck unified the empire under the Kaiser", "German"),
    ("The Brandenburg Gate", "German"),
    ("Goethe wrote Faust", "German"),

    ("The Eiffel Tower and the Louvre", "French"),
    ("Croissants, baguettes and camembert", "French"),
    ("The storming of the Bastille began the revolution of 1789", "French"),
    ("Louis XIV, the Sun King, built the palace of Versailles", "French"),
    ("Napoleon Bonaparte crowned himself emperor", "French"),

    ("Flamenco dancing and bullfighting", "Spanish"),
    ("Paella and tapas with sangria", "Spanish"),
    ("Cervantes wrote Don Quixote", "Spanish"),
    ("Gaudí's Sagrada Família in Barcelona", "Spanish"),
    ("The Alhambra palace in Granada", "Spanish"),

    ("Pizza, pasta and espresso", "Italian"),
    ("Michelangelo painted the ceiling of the Sistine Chapel", "Italian"),
    ("Gladiators fought in the Colosseum", "Italian"),
    ("Verdi's operas at La Scala in Milan", "Italian"),
    ("The Leaning Tower of Pisa", "Italian"),

    ("The Kremlin and Red Square", "Russian"),
    ("Tolstoy wrote War and Peace", "Russian"),
    ("Tchaikovsky's ballet Swan Lake", "Russian"),
    ("Peter the Great founded Saint Petersburg", "Russian"),
    ("Lenin led the Bolshevik revolution of 1917", "Russian"),
]
