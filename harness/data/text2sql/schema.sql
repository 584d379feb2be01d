-- Text2SQL benchmark schema: four small, unrelated domains in one SQLite
-- database (library, shop, school, weather stations). Written for this
-- project; released under CC0 1.0.

-- Library

CREATE TABLE authors (
    id INTEGER PRIMARY KEY,
    name TEXT,
    country TEXT,
    birth_year INTEGER
);

CREATE TABLE books (
    id INTEGER PRIMARY KEY,
    title TEXT,
    author_id INTEGER REFERENCES authors(id),
    year INTEGER,
    pages INTEGER,
    genre TEXT
);

CREATE TABLE loans (
    id INTEGER PRIMARY KEY,
    book_id INTEGER REFERENCES books(id),
    borrower TEXT,
    loan_date TEXT,
    returned INTEGER
);

-- Shop

CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT,
    city TEXT,
    joined_year INTEGER
);

CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT,
    category TEXT,
    price REAL,
    stock INTEGER
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(id),
    product_id INTEGER REFERENCES products(id),
    quantity INTEGER,
    order_date TEXT
);

-- School

CREATE TABLE students (
    id INTEGER PRIMARY KEY,
    name TEXT,
    year_level INTEGER,
    house TEXT
);

CREATE TABLE courses (
    id INTEGER PRIMARY KEY,
    title TEXT,
    department TEXT,
    credits INTEGER
);

CREATE TABLE enrollments (
    id INTEGER PRIMARY KEY,
    student_id INTEGER REFERENCES students(id),
    course_id INTEGER REFERENCES courses(id),
    score INTEGER
);

-- Weather stations

CREATE TABLE stations (
    id INTEGER PRIMARY KEY,
    name TEXT,
    region TEXT,
    elevation INTEGER
);

CREATE TABLE readings (
    id INTEGER PRIMARY KEY,
    station_id INTEGER REFERENCES stations(id),
    reading_date TEXT,
    temp_c REAL,
    rain_mm REAL
);

-- Rows

INSERT INTO authors (id, name, country, birth_year) VALUES (1, 'Mara Quillfeather', 'Peru', 1952);
INSERT INTO authors (id, name, country, birth_year) VALUES (2, 'Tobin Ashgrove', 'Canada', 1968);
INSERT INTO authors (id, name, country, birth_year) VALUES (3, 'Inez Valloran', 'Spain', 1975);
INSERT INTO authors (id, name, country, birth_year) VALUES (4, 'Desmond Okafor-Pike', 'Nigeria', 1949);
INSERT INTO authors (id, name, country, birth_year) VALUES (5, 'Lucia Brennhart', 'Germany', 1983);
INSERT INTO authors (id, name, country, birth_year) VALUES (6, 'Hollis Tran', 'Canada', 1990);
INSERT INTO authors (id, name, country, birth_year) VALUES (7, 'Anouk Delacorte', 'France', 1961);
INSERT INTO authors (id, name, country, birth_year) VALUES (8, 'Ravi Sundermann', 'India', 1971);

INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (1, 'The Salt Orchard', 1, 1988, 312, 'novel');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (2, 'Lanterns Under Glass', 1, 1995, 244, 'poetry');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (3, 'North of the Quarry', 2, 2001, 410, 'mystery');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (4, 'A Map for Small Hours', 2, 2010, 198, 'novel');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (5, 'The Copper Archive', 3, 2004, 356, 'history');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (6, 'Whistling at Stones', 4, 1979, 288, 'novel');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (7, 'Eleven Windows', 5, 2015, 176, 'poetry');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (8, 'The Last Ferry Clerk', 6, 2019, 332, 'mystery');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (9, 'Small Engines of Grace', 7, 1992, 264, 'novel');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (10, 'Tables of the River', 8, 2008, 452, 'history');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (11, 'The Glass Beekeeper', 3, 2012, 228, 'mystery');
INSERT INTO books (id, title, author_id, year, pages, genre) VALUES (12, 'Field Notes on Rain', 8, 2020, 140, 'poetry');

INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (1, 3, 'Priya', '2024-01-05', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (2, 1, 'Owen', '2024-01-09', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (3, 8, 'Priya', '2024-01-14', 0);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (4, 5, 'Gemma', '2024-02-02', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (5, 3, 'Felix', '2024-02-10', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (6, 10, 'Owen', '2024-02-18', 0);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (7, 7, 'Gemma', '2024-03-01', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (8, 3, 'Hana', '2024-03-07', 0);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (9, 11, 'Felix', '2024-03-15', 1);
INSERT INTO loans (id, book_id, borrower, loan_date, returned) VALUES (10, 1, 'Priya', '2024-03-22', 1);

INSERT INTO customers (id, name, city, joined_year) VALUES (1, 'Ada Marsh', 'Leeds', 2019);
INSERT INTO customers (id, name, city, joined_year) VALUES (2, 'Bruno Keel', 'Porto', 2020);
INSERT INTO customers (id, name, city, joined_year) VALUES (3, 'Celia Fenwick', 'Leeds', 2021);
INSERT INTO customers (id, name, city, joined_year) VALUES (4, 'Dario Vasz', 'Lyon', 2018);
INSERT INTO customers (id, name, city, joined_year) VALUES (5, 'Esme Holt', 'Porto', 2022);
INSERT INTO customers (id, name, city, joined_year) VALUES (6, 'Farid Amini', 'Leeds', 2020);
INSERT INTO customers (id, name, city, joined_year) VALUES (7, 'Greta Lind', 'Oslo', 2023);
INSERT INTO customers (id, name, city, joined_year) VALUES (8, 'Hugo Pell', 'Lyon', 2021);

INSERT INTO products (id, name, category, price, stock) VALUES (1, 'Bamboo Cutting Board', 'kitchen', 18.5, 40);
INSERT INTO products (id, name, category, price, stock) VALUES (2, 'Enamel Mug', 'kitchen', 9.25, 120);
INSERT INTO products (id, name, category, price, stock) VALUES (3, 'Linen Apron', 'kitchen', 22.0, 35);
INSERT INTO products (id, name, category, price, stock) VALUES (4, 'Wool Throw', 'home', 64.0, 12);
INSERT INTO products (id, name, category, price, stock) VALUES (5, 'Desk Lamp', 'home', 39.9, 25);
INSERT INTO products (id, name, category, price, stock) VALUES (6, 'Ceramic Planter', 'garden', 27.5, 30);
INSERT INTO products (id, name, category, price, stock) VALUES (7, 'Pruning Shears', 'garden', 31.75, 18);
INSERT INTO products (id, name, category, price, stock) VALUES (8, 'Seed Tin Set', 'garden', 12.0, 60);
INSERT INTO products (id, name, category, price, stock) VALUES (9, 'Notebook Trio', 'stationery', 14.5, 80);
INSERT INTO products (id, name, category, price, stock) VALUES (10, 'Brass Pen', 'stationery', 45.0, 15);

INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (1, 1, 2, 4, '2024-04-02');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (2, 2, 4, 1, '2024-04-03');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (3, 3, 9, 2, '2024-04-05');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (4, 1, 7, 1, '2024-04-08');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (5, 4, 5, 2, '2024-04-11');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (6, 5, 2, 6, '2024-04-12');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (7, 6, 10, 1, '2024-04-15');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (8, 2, 6, 3, '2024-04-18');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (9, 7, 1, 2, '2024-04-20');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (10, 3, 3, 1, '2024-04-22');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (11, 1, 8, 5, '2024-04-25');
INSERT INTO orders (id, customer_id, product_id, quantity, order_date) VALUES (12, 8, 4, 2, '2024-04-28');

INSERT INTO students (id, name, year_level, house) VALUES (1, 'Amara Chen', 10, 'Oak');
INSERT INTO students (id, name, year_level, house) VALUES (2, 'Ben Ruiz', 11, 'Birch');
INSERT INTO students (id, name, year_level, house) VALUES (3, 'Cleo Park', 10, 'Birch');
INSERT INTO students (id, name, year_level, house) VALUES (4, 'Dev Patel', 12, 'Oak');
INSERT INTO students (id, name, year_level, house) VALUES (5, 'Elin Moss', 11, 'Cedar');
INSERT INTO students (id, name, year_level, house) VALUES (6, 'Finn Osei', 12, 'Cedar');
INSERT INTO students (id, name, year_level, house) VALUES (7, 'Gia Romano', 10, 'Oak');
INSERT INTO students (id, name, year_level, house) VALUES (8, 'Hal Brooks', 11, 'Oak');
INSERT INTO students (id, name, year_level, house) VALUES (9, 'Iris Novak', 12, 'Birch');
INSERT INTO students (id, name, year_level, house) VALUES (10, 'Jonah Weir', 10, 'Cedar');

INSERT INTO courses (id, title, department, credits) VALUES (1, 'Algebra II', 'math', 4);
INSERT INTO courses (id, title, department, credits) VALUES (2, 'Statistics', 'math', 3);
INSERT INTO courses (id, title, department, credits) VALUES (3, 'World History', 'humanities', 3);
INSERT INTO courses (id, title, department, credits) VALUES (4, 'Creative Writing', 'humanities', 2);
INSERT INTO courses (id, title, department, credits) VALUES (5, 'Chemistry', 'science', 4);
INSERT INTO courses (id, title, department, credits) VALUES (6, 'Astronomy', 'science', 2);

INSERT INTO enrollments (id, student_id, course_id, score) VALUES (1, 1, 1, 88);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (2, 1, 5, 92);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (3, 2, 3, 75);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (4, 2, 4, 81);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (5, 3, 1, 67);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (6, 3, 6, 94);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (7, 4, 2, 79);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (8, 4, 5, 85);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (9, 5, 3, 90);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (10, 6, 2, 72);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (11, 7, 4, 96);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (12, 8, 1, 58);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (13, 9, 5, 83);
INSERT INTO enrollments (id, student_id, course_id, score) VALUES (14, 10, 6, 77);

INSERT INTO stations (id, name, region, elevation) VALUES (1, 'Harrow Point', 'coast', 12);
INSERT INTO stations (id, name, region, elevation) VALUES (2, 'Kestrel Ridge', 'highland', 840);
INSERT INTO stations (id, name, region, elevation) VALUES (3, 'Millbrook', 'valley', 145);
INSERT INTO stations (id, name, region, elevation) VALUES (4, 'Saltmarsh Flats', 'coast', 3);
INSERT INTO stations (id, name, region, elevation) VALUES (5, 'Tarn Summit', 'highland', 1210);
INSERT INTO stations (id, name, region, elevation) VALUES (6, 'Willow Bend', 'valley', 98);

INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (1, 1, '2024-05-01', 14.2, 0.0);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (2, 1, '2024-05-02', 13.8, 4.6);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (3, 2, '2024-05-01', 6.1, 2.2);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (4, 2, '2024-05-02', 4.9, 11.4);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (5, 3, '2024-05-01', 16.5, 0.0);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (6, 3, '2024-05-02', 17.3, 1.8);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (7, 4, '2024-05-01', 15.0, 0.4);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (8, 4, '2024-05-02', 14.6, 7.9);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (9, 5, '2024-05-01', 1.7, 15.2);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (10, 5, '2024-05-02', -0.8, 9.6);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (11, 6, '2024-05-01', 18.1, 0.0);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (12, 6, '2024-05-02', 18.9, 0.6);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (13, 1, '2024-05-03', 15.4, 0.0);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (14, 3, '2024-05-03', 19.2, 3.1);
INSERT INTO readings (id, station_id, reading_date, temp_c, rain_mm) VALUES (15, 5, '2024-05-03', 2.3, 6.0);
